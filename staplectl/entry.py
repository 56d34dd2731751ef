"""The `staplectl` program: the command line, started as cheaply as it can be.

`staplectl --version` is answered here, before Typer is even imported: what
a package manager, a deploy script or a bug report asks, at the
interpreter's own speed (Typer and the app's definition cost several times
the interpreter's start, bench/startup.py). The app declares the option
all the same, for --help, the man page and the completions.
"""

from __future__ import annotations

import sys

from staplectl import __version__


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(f"staplectl {__version__}")
        return
    from staplectl.app import app

    app()
