"""The design, visible in the tree and kept so: who may import whom.

engine/ is layered (docs/design.md, "The layers"); each package imports only
the layers below it. The front ends (staplectl/) use the engine through
engine.api alone, and the engine imports no front end (nor typer, rich or
textual). Read from the source with ast: an import inside a function counts
too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: each layer, and the layers it may import (besides itself); "base" is the
#: top-level plumbing (errors, clock, durations, bounds, paths, redact, atomic)
LAYERS = {
    "base": set(),
    "ocsp": {"base"},
    "locks": {"base"},
    "responders": {"base", "ocsp", "locks"},
    "store": {"base", "ocsp", "locks"},
    "refresh": {"base", "ocsp", "locks", "responders", "store"},
    "inspection": {"base", "ocsp", "locks", "responders", "store", "refresh"},
    "probe": {"base", "ocsp", "refresh"},
    "assembly": {"base", "ocsp", "locks", "responders", "store", "refresh"},
    "processes": {"base", "ocsp", "locks", "responders", "store", "refresh", "assembly"},
    "api": {"base", "ocsp", "locks", "responders", "store", "refresh", "inspection", "probe", "assembly",
            "processes"},
}
BASE = {"errors", "clock", "durations", "bounds", "paths", "redact", "atomic", "__init__"}
FRONT_ENDS = {"staplectl", "typer", "rich", "textual"}


def layer_of(module: str) -> str:
    """engine.ocsp.certs -> ocsp; engine.errors -> base; engine.api -> api."""
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if parts[1] in LAYERS:
        return parts[1]
    if parts[1] in BASE:
        return "base"
    raise AssertionError(f"{module}: not in any layer; add it to LAYERS or BASE in tests/test_layers.py")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "engine":  # from engine import x: the module engine.x
                found |= {f"engine.{alias.name}" for alias in node.names}
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_every_engine_layer_imports_only_those_below() -> None:
    wrong = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        mine = layer_of(module_name(path))
        for imported in imports(path):
            top = imported.split(".")[0]
            if top in FRONT_ENDS:
                wrong.append(f"{module_name(path)} imports {imported}: the engine imports no front end")
            elif top == "engine" and imported != "engine":
                theirs = layer_of(imported)
                if theirs != mine and theirs not in LAYERS[mine]:
                    wrong.append(f"{module_name(path)} ({mine}) imports {imported} ({theirs})")
    assert wrong == []


def test_the_front_ends_use_only_the_engines_public_api() -> None:
    wrong = [
        f"{module_name(path)} imports {imported}"
        for path in sorted((ROOT / "staplectl").rglob("*.py"))
        for imported in imports(path)
        if imported.split(".")[0] == "engine" and imported != "engine.api"
    ]
    assert wrong == []


def test_every_name_the_api_promises_is_there() -> None:
    import engine.api

    missing = [name for name in engine.api.__all__ if not hasattr(engine.api, name)]
    assert missing == [] and len(set(engine.api.__all__)) == len(engine.api.__all__)


def test_no_source_file_is_over_500_lines() -> None:
    # Short modules, one idea each: a file that grows past this has two.
    import subprocess

    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    long = {}
    for name in files.stdout.split():
        path = ROOT / name
        if path.is_file():
            lines = path.read_text().count("\n")
            if lines > 500:
                long[name] = lines
    assert long == {}
