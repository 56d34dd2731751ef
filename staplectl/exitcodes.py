"""Exit codes, the same for every command (the README and man page list them).

``staplectl check`` follows the Nagios plugin convention instead, where
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

from enum import IntEnum

from engine.api import InputError, StapleError


class Exit(IntEnum):
    OK = 0  # every certificate has a good staple
    NOT_GOOD = 1  # a responder said revoked or unknown
    BAD_INPUT = 2  # a file, option, URI or configuration is wrong
    FAILED = 3  # the responder, the cache, or the response failed; nothing stored; or a bug


EXIT_TABLE = [
    (Exit.OK, "success: every certificate has a good staple"),
    (Exit.NOT_GOOD, "a responder answered revoked or unknown"),
    (Exit.BAD_INPUT, "bad input: a file, option, URI or configuration value is wrong"),
    (Exit.FAILED, "failure: responder unreachable or invalid response, or cache failure; nothing was stored; "
                  "or an internal error (a bug: one line, the traceback at -vv or with STAPLECTL_TRACEBACK=1)"),
]


def for_error(error: StapleError) -> Exit:
    return Exit.BAD_INPUT if isinstance(error, InputError) else Exit.FAILED
