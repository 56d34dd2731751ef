import pytest

# contract.py holds the shared tests: give its asserts pytest's detailed messages.
pytest.register_assert_rewrite("tests.providers.contract")
