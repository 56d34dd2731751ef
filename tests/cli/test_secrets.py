"""A redis password never reaches stdout or stderr, whatever the command."""

from __future__ import annotations

from tests.conftest import SECRET


def test_the_commands_never_print_the_password(cli, pki, redis_server, acl_user, tmp_path):
    uri = f"redis://{acl_user}:{SECRET}@{redis_server.host}:{redis_server.port}/0"
    for args in (("fetch", pki.good.chain_path), ("fetch", pki.good.chain_path, "--json"), ("inspect",),
                 ("inspect", "--json"), ("config",), ("config", "--json")):  # fmt: skip
        ran = cli(*args, "--cache", uri)
        assert ran.exit_code in (0, 1), (args, ran.stderr)
        assert SECRET not in ran.stdout + ran.stderr, args
    bad = cli("inspect", "--cache", uri.replace(SECRET, "nope"))
    assert bad.exit_code == 3 and "nope" not in bad.stderr
