"""staplectl(1), generated from the Typer app by walking its command tree.

Not click-man: Typer vendors its own Click, and click-man drops options.
Every command's help and options come from the same walk the completions
use (staplectl/completion.py), the exit codes from staplectl.exitcodes;
only the sections no command knows about (environment, files, examples,
how to read inspect and locks) are written here. No date in the output:
the committed page must be byte-for-byte what this module generates
(tests/test_generated_files.py). ``scripts/generate-docs`` rewrites it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import typer

from staplectl import __version__, completion
from staplectl.completion import Cmd, Opt
from staplectl.exitcodes import EXIT_TABLE


def _esc(text: str) -> str:
    """Roff-safe text: backslashes, hyphens as minus signs, no control line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _paragraphs(help_text: str) -> list[str]:
    """Help text as roff: prose is refilled, '- ' lists become bullets, indented blocks stay."""
    out = []
    for block in help_text.split("\n\n"):
        lines = [line for line in block.split("\n") if line.strip() and line.strip() != "\b"]
        if not lines:
            continue
        if lines[0].startswith(("  ", "\t")):
            out += [".PP", ".RS 4", ".nf", *(_esc(line.strip()) for line in lines), ".fi", ".RE"]
        elif lines[0].startswith("- "):
            out.append(".PP")
            for line in lines:
                if line.startswith("- "):
                    out += [".IP \\(bu 2", _esc(line[2:].strip())]
                else:
                    out.append(_esc(line.strip()))
        else:
            out += [".PP", *(_esc(line.strip()) for line in lines)]
    return out


def _option(o: Opt) -> list[str]:
    names = ", ".join(f"\\fB{_esc(n)}\\fR" for n in o.names)
    value = f" \\fI{_esc(o.metavar)}\\fR" if o.metavar else ""
    return [".TP", names + value, _esc(o.record or o.help)]


def _usage(c: Cmd) -> str:
    args = []
    for a in c.args:
        word = f"\\fI{_esc(a.metavar)}\\fR" + ("..." if a.many else "")
        args.append(word if a.required else f"[{word}]")
    return " ".join([f"\\fBstaplectl {c.name}\\fR", "[\\fIOPTIONS\\fR]", *args])


_STATIC_TOP = r"""
.SH "INSPECT FLAGS"
.TP
.B error\-entry
flag byte 0x00: httpd cached a responder error.
.TP
.B try\-later
a non\-successful responseStatus (tryLater, internalError) cached as valid: httpd 2.4's fake tryLater, stapled for an hour.
.TP
.B unverified
the certificate is not known (not configured, not named in staplectl's metadata), so the signature and CertID were not checked.
.TP
.BI "invalid: " reason
a check failed (bad_signature, certid_mismatch, unauthorized_responder, malformed...); the full view names it.
.TP
.BR expired ", " not\-yet\-valid
nextUpdate has passed, or thisUpdate is more than the allowed skew ahead.
.TP
.B due
still valid, but past the point where it should be renewed.
.TP
.B metadata\-only
staplectl's metadata without a staple: every fetch failed so far.
.SH "READING LOCKS"
Each certificate has its own fetch lock; whoever holds it may fetch for that certificate, and two certificates never wait on each other.
Their figures are grouped in stripes (a certificate's is the first 32 bits of its id modulo
.BR locks.stripes )
so that they stay readable with many certificates: a row's
.B held
is how many of its certificates are held now, and
.B "longest held"
the one held longest.
.B contended
counts acquisitions that had to wait for another thread or process refreshing the same certificate.
A few percent is normal when a prefetch service and one\-shot commands overlap; long waits mean a slow responder held up that fetch: lower the responder timeout.
A holder whose process is gone is shown as crashed: the kernel has already released its lock, and the next holder overwrites the record.
"""

_ENVIRONMENT = [
    ("STAPLECTL_HOME", "Directory of the default local store, worker state and lock directory."),
    ("STAPLECTL_CACHE", "Cache URI, as --cache."),
    ("STAPLECTL_CONFIG", "Configuration file, as --config."),
    ("XDG_STATE_HOME", "Without STAPLECTL_HOME, state lives in $XDG_STATE_HOME/staplectl (default ~/.local/state/staplectl)."),
    ("XDG_CONFIG_HOME", "The configuration file is looked for in $XDG_CONFIG_HOME/staplectl/config.toml (default ~/.config)."),
    ("NO_COLOR", "When set, no colour in tables and messages."),
]
_FILES = [
    ("$STAPLECTL_HOME/staples.db", "The default local store (SQLite)."),
    ("$STAPLECTL_HOME/worker.db", "The prefetch worker's state, read by inspect."),
    ("$STAPLECTL_HOME/locks/", "The fetch locks (certificates.lock) and their figures (locks.stats), read by locks."),
    ("~/.config/staplectl/config.toml, /etc/staplectl/config.toml", "Configuration files, the first that exists."),
]
_EXAMPLES = [
    ("Fetch one staple into httpd's memcached:", "staplectl fetch /etc/ssl/www.pem \\-\\-cache memcache://127.0.0.1:11211"),
    ("Show every entry, including those httpd wrote:", "staplectl inspect \\-\\-cache memcache://127.0.0.1:11211"),
    ("Everything about one certificate's staple:", "staplectl inspect /etc/ssl/www.pem"),
    ("The response alone, as openssl shows it:", "staplectl inspect mod_ssl\\-staple:<sha1> \\-\\-text"),
    ("Watch lock contention while the prefetch service runs:", "staplectl locks \\-\\-watch"),
]


def render(app: typer.Typer) -> str:
    root, commands = completion.command_tree(app)
    summary = root.help.split("\n\n")[0].split(":")[0].rstrip(".")
    lines = [
        f'.\\" {completion.HEADER}',
        f'.TH STAPLECTL 1 "" "staplectl {__version__}" "User Commands"',
        ".SH NAME",
        f"staplectl \\- {_esc(summary[0].lower() + summary[1:])}",
        ".SH SYNOPSIS",
        ".B staplectl",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]",
    ]
    for c in commands:
        lines += [".br", _usage(c)]
    lines += [".SH DESCRIPTION", *_paragraphs(root.help)]
    lines += [".SH \"GLOBAL OPTIONS\"", ".PP", "Every command also accepts these after its name; there they win."]
    for o in root.options:
        lines += _option(o)
    shared = {tuple(o.names) for o in root.options}
    lines.append(".SH COMMANDS")
    for c in commands:
        lines += [f".SS {c.name}", ".PP", _usage(c), *_paragraphs(c.help)]
        for o in c.options:
            if tuple(o.names) not in shared:
                lines += _option(o)
    lines += _STATIC_TOP.strip().split("\n")
    lines += [".SH \"EXIT STATUS\""]
    for code, meaning in EXIT_TABLE:
        lines += [".TP", f".B {int(code)}", _esc(meaning)]
    lines += [".PP", "The same for every command, except", ".B check",
              "which follows the Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."]  # fmt: skip
    lines.append(".SH ENVIRONMENT")
    for name, text in _ENVIRONMENT:
        lines += [".TP", f".B {name}", _esc(text)]
    lines += [".SH FILES", ".PP", "Without STAPLECTL_HOME, read $XDG_STATE_HOME/staplectl (default ~/.local/state/staplectl) below."]
    for name, text in _FILES:
        lines += [".TP", f".I {_esc(name)}", _esc(text)]
    lines.append(".SH EXAMPLES")
    for text, command in _EXAMPLES:
        lines += [".PP", _esc(text), ".RS 4", ".nf", command, ".fi", ".RE"]
    lines += [".SH \"SEE ALSO\"", ".BR openssl\\-ocsp (1),", ".BR httpd (8),", ".BR nginx (8),", ".BR haproxy (1)"]
    return "\n".join(lines) + "\n"


def generated_files(app: typer.Typer) -> dict[str, str]:
    """Every file generated from the app, by path relative to the project root."""
    return {
        "completions/staplectl.bash": completion.bash(app),
        "completions/_staplectl": completion.zsh(app),
        "completions/staplectl.fish": completion.fish(app),
        "man/staplectl.1": render(app),
    }


def main(argv: list[str] | None = None) -> int:
    """scripts/generate-docs: write the files, or with --check list those out of date."""
    parser = argparse.ArgumentParser(prog="generate-docs", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project root")
    args = parser.parse_args(argv)
    from staplectl.app import app

    stale = []
    for name, text in generated_files(app).items():
        path = args.root / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "out of date" if args.check else "written"
    for name in stale:
        print(f"{verb}: {name}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
