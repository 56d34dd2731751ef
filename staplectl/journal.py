"""Whether our stderr is the systemd journal, and how a line says its priority there.

systemd sets ``$JOURNAL_STREAM`` to the device and inode of the stream it
connected to the journal (systemd.exec(5)); when stderr is that stream,
the journal stamps each line with its own time, so we write none, and it
reads a ``<N>`` prefix (sd-daemon(3)) as the line's priority, so that
``journalctl -p err`` picks out the errors. Anywhere else (a terminal, a
file, a container's log) lines keep their own timestamp.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

#: syslog priorities (sd-daemon's SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG)
PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}


def to_journal(stream: TextIO = sys.stderr, environ: Mapping[str, str] = os.environ) -> bool:
    expected = environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False  # not a file descriptor at all (a test's capture, a closed stream)
    return expected == f"{info.st_dev}:{info.st_ino}"


def journal_line(level: str, text: str) -> str:
    return f"<{PRIORITY.get(level, 6)}>{text}"
