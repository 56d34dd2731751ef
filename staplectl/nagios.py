"""A command class for `staplectl check`: usage errors exit 3 (UNKNOWN).

Monitoring systems read exit 2 as CRITICAL; a mistyped option in a check's
definition is not a critical service, it is an unknown state.
"""

from __future__ import annotations

from typing import Any

from typer._click.exceptions import UsageError

from staplectl.options import GlobalsCommand

UNKNOWN = 3


class NagiosCommand(GlobalsCommand):
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as error:
            error.exit_code = UNKNOWN
            raise
