"""The engine never imports a front end; the dashboard's data side never imports textual.

Each check runs in a fresh interpreter (harlequin's test): in this process
pytest and other tests have imported everything already.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parent.parent
ENGINE_MODULES = sorted(m.name for m in pkgutil.walk_packages(engine.__path__, "engine."))


def imported_after(modules: list[str], watched: list[str]) -> list[str]:
    """Which of ``watched`` a fresh interpreter has in sys.modules after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(w for w in {watched!r} if w in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_engine_module_is_found():
    # a walk that found nothing would pass the test below vacuously
    assert {"engine.refresh.stapler", "engine.inspection", "engine.store.providers.memcache", "engine.refresh.prefetch"} <= set(ENGINE_MODULES)


def test_engine_imports_no_front_end():
    assert imported_after(ENGINE_MODULES, ["textual", "rich", "typer", "click", "staplectl"]) == []


def test_dashboard_data_side_imports_no_textual():
    # snapshot.py reads data: neither textual nor rich; rows, panels, detail
    # and actions make Rich renderables and call the engine: no textual
    assert imported_after(["staplectl.dashboard.snapshot"], ["textual", "rich", "typer"]) == []
    pure = ["staplectl.dashboard.rows", "staplectl.dashboard.panels", "staplectl.dashboard.detail",
            "staplectl.dashboard.actions"]  # fmt: skip
    assert imported_after(pure, ["textual", "typer"]) == []
