"""The ``[[actions]]`` of the configuration: what the prefetch service (and
``warm``) runs when staples change, so that renewals reach the servers
that read files.

    [[actions]]
    type = "nginx"                      # staple files and a reload
    directory = "/etc/nginx/ocsp"
    reload = "systemctl reload nginx"
    min_interval = "30s"                # at most one reload per 30 s

    [[actions]]
    type = "haproxy"                    # <cert>.ocsp files, and/or pushes
    socket = "/run/haproxy/admin.sock"

    [[actions]]
    type = "command"                    # anything else
    command = "/usr/local/bin/sync-staples"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.api import InputError, format_duration, parse_duration

#: each type's keys (besides type, name, min_interval), and its default min_interval
_KEYS = {
    "nginx": ({"directory", "naming", "reload"}, 30.0),
    "haproxy": ({"files", "socket", "reload"}, 0.0),
    "command": ({"command"}, 30.0),
}


class ActionConfigError(InputError):
    reason = "bad_config"


@dataclass(frozen=True)
class ActionSpec:
    type: str
    name: str
    min_interval: float
    #: nginx: where the staple files go, and how they are named (export --name)
    directory: Path | None = None
    naming: str | None = None
    #: nginx (required) and haproxy (optional): run after files changed
    reload: str | None = None
    #: haproxy: write <cert>.ocsp beside each certificate, and/or push through the admin socket
    files: bool = True
    socket: Path | None = None
    #: command: run with the changed certificates in its environment
    command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "name": self.name, "min_interval": format_duration(self.min_interval)}
        for key in sorted(_KEYS[self.type][0]):
            value = getattr(self, key)
            data[key] = str(value) if isinstance(value, Path) else value
        return data


def parse_actions(where: str, items: Any, base: Path) -> list[ActionSpec]:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ActionConfigError(f"{where}: actions should be tables: [[actions]] with type = \"nginx\", ...")
    specs: list[ActionSpec] = []
    for index, item in enumerate(items):
        specs.append(_one(f"{where}: actions[{index}]", item, base, [s.name for s in specs]))
    return specs


def _one(where: str, item: dict[str, Any], base: Path, taken: list[str]) -> ActionSpec:
    kind = item.get("type")
    if kind not in _KEYS:
        raise ActionConfigError(f"{where}: type = {kind!r}: expected one of {', '.join(_KEYS)}")
    keys, default_interval = _KEYS[kind]
    unknown = set(item) - keys - {"type", "name", "min_interval"}
    if unknown:
        raise ActionConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} for type {kind!r} "
                                f"(known: {', '.join(sorted(keys | {'name', 'min_interval'}))})")  # fmt: skip
    name = _string(where, item, "name") or _free_name(kind, taken)
    if name in taken:
        raise ActionConfigError(f"{where}: name {name!r} is taken by another action")
    interval = default_interval
    if "min_interval" in item:
        try:
            interval = parse_duration(item["min_interval"], f"{where}: min_interval")
        except ValueError as exc:
            raise ActionConfigError(str(exc)) from None

    def path(key: str) -> Path | None:
        text = _string(where, item, key)
        return None if text is None else (base / Path(text).expanduser())

    files = item.get("files", True)
    if not isinstance(files, bool):
        raise ActionConfigError(f"{where}: files = {files!r} should be true or false")
    spec = ActionSpec(kind, name, interval, path("directory"), _string(where, item, "naming"),
                      _string(where, item, "reload"), files, path("socket"), _string(where, item, "command"))  # fmt: skip
    missing = {"nginx": ["directory", "reload"], "command": ["command"]}.get(kind, [])
    if kind == "haproxy" and not spec.files and spec.socket is None:
        raise ActionConfigError(f"{where}: a haproxy action with files = false needs a socket")
    for key in missing:
        if getattr(spec, key) is None:
            raise ActionConfigError(f"{where}: type {kind!r} needs {key}")
    return spec


def _string(where: str, item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ActionConfigError(f"{where}: {key} = {value!r} should be a non-empty string")
    return value


def _free_name(kind: str, taken: list[str]) -> str:
    if kind not in taken:
        return kind
    number = 2
    while f"{kind}-{number}" in taken:
        number += 1
    return f"{kind}-{number}"
