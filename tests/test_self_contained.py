"""The repository stands on its own: nothing in it cites a document outside it.

docs/design.md carries what the code refers to (the design, the servers'
formats, the targets). A citation of the proposal the project grew from
would send a reader to a file they do not have.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: spelled in two parts, so that this file does not cite them itself
OUTSIDE = ("DESIGN" + ".md", "seed-" + "proposal", "../" + "shared")


def test_no_file_cites_a_document_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    citing = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png", ".svg", ".json", ".db"}:
            continue
        text = path.read_text(errors="replace")
        citing += [f"{name}: {word}" for word in OUTSIDE if word in text]
    assert citing == []


def test_the_design_doc_has_what_the_code_refers_to() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    for heading in ("## Providers and the cache mutex", "## The request path", "## The prefetch worker",
                    "## Where the cache meets real servers", "## Targets", "## Fetch locks"):  # fmt: skip
        assert heading in design
