"""The configuration file (TOML) and the effective configuration.

Every option has a default, so a file naming only certificates works:

    certificates = ["/etc/ssl/private/www.pem", "/etc/ssl/sites/*.pem"]

Where the file comes from: ``--config``, else ``$STAPLECTL_CONFIG``, else
the first of ``$XDG_CONFIG_HOME/staplectl/config.toml`` (or
``~/.config/...``) and ``/etc/staplectl/config.toml`` that exists, else
none (the defaults). ``--cache`` on the command line wins over ``cache``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.api import (
    BOUNDS, CERTID_HASHES, DEFAULT_MAX_AGE, DEFAULT_MAX_SIZE, DEFAULT_POLICY, DEFAULT_SKEW, DEFAULT_STRIPES, DEFAULT_TIMEOUT,
    CertSpec, FreshnessPolicy, InputError, OutOfBoundsError, check_bound, default_cache_uri,
    format_duration, parse_allow, parse_duration, parse_proxy, redact, state_dir,
)
from staplectl.action_config import ActionSpec, parse_actions


class ConfigError(InputError):
    reason = "bad_config"


@dataclass
class Locks:
    stripes: int = DEFAULT_STRIPES
    directory: Path | None = None  # default: <state dir>/locks

    def path(self) -> Path:
        return self.directory or state_dir() / "locks"


@dataclass
class Prefetch:
    # the freshness defaults live in one place: engine.refresh.freshness
    enabled: bool = True
    renew_fraction: float = DEFAULT_POLICY.renew_fraction
    min_delay: float = DEFAULT_POLICY.min_delay
    max_delay: float = DEFAULT_POLICY.max_delay
    jitter: float = DEFAULT_POLICY.jitter
    backoff_base: float = DEFAULT_POLICY.backoff_base
    backoff_cap: float = DEFAULT_POLICY.backoff_cap
    backoff_jitter: float = DEFAULT_POLICY.backoff_jitter
    concurrency: int = 8
    per_responder: int = 2


@dataclass
class Responder:
    timeout: float = DEFAULT_TIMEOUT
    max_size: int = DEFAULT_MAX_SIZE
    skew: float = DEFAULT_SKEW
    max_age: float = DEFAULT_MAX_AGE
    nonce: bool = False
    get: bool = False
    check_not_after: bool = False
    #: the CertID hash requests use; a response may answer with another
    #: (matched by the hash it names). SHA-1 is what RFC 5019 responders
    #: index on; some CAs also answer SHA-256.
    hash: str = "sha1"
    #: refuse responses signed with SHA-1 or a short RSA key instead of
    #: flagging them (engine.ocsp.weak): no staple rather than a weak one
    refuse_weak: bool = False
    #: networks a responder may be in although they are refused by default
    #: (loopback, private, link-local...: engine.responders.addresses)
    allow: list[str] = field(default_factory=list)
    #: an http:// forward proxy for every responder (engine.responders.proxy);
    #: unset: $http_proxy / $https_proxy (and $no_proxy) from the environment
    proxy: str | None = None
    #: hosts asked directly although a proxy is set (NO_PROXY's syntax)
    no_proxy: list[str] = field(default_factory=list)


@dataclass
class Request:
    budget: float = 2.0
    lease: bool = False
    lease_ttl: float = 30.0


@dataclass
class Config:
    path: Path | None = None
    cache: str | None = None
    certificates: list[CertSpec] = field(default_factory=list)
    locks: Locks = field(default_factory=Locks)
    prefetch: Prefetch = field(default_factory=Prefetch)
    responder: Responder = field(default_factory=Responder)
    request: Request = field(default_factory=Request)
    state: Path | None = None  # default: <state dir>/worker.db
    #: what runs when staples change (staplectl/action_config.py)
    actions: list[ActionSpec] = field(default_factory=list)

    @property
    def cache_uri(self) -> str:
        return self.cache or default_cache_uri()

    def state_path(self) -> Path:
        return self.state or state_dir() / "worker.db"

    def policy(self) -> FreshnessPolicy:
        p = self.prefetch
        return FreshnessPolicy(
            renew_fraction=p.renew_fraction,
            min_delay=p.min_delay,
            max_delay=p.max_delay,
            jitter=p.jitter,
            backoff_base=p.backoff_base,
            backoff_cap=p.backoff_cap,
            backoff_jitter=p.backoff_jitter,
            skew=self.responder.skew,
            max_age=self.responder.max_age,
        )

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration, durations written as durations."""

        def section(obj: Any) -> dict[str, Any]:
            out = {}
            for f in fields(obj):
                value = getattr(obj, f.name)
                if f.name in _DURATIONS.get(type(obj).__name__, ()):
                    value = format_duration(value)
                elif isinstance(value, Path):
                    value = str(value)
                elif f.name == "proxy" and value:
                    value = redact(value)  # its password stays out of what is printed
                out[f.name] = value
            return out

        return {
            "config_file": str(self.path) if self.path else None,
            "cache": self.cache_uri,
            "state": str(self.state_path()),
            "certificates": [
                {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()}
                for spec in self.certificates
            ],
            "locks": {**section(self.locks), "directory": str(self.locks.path())},
            "prefetch": section(self.prefetch),
            "responder": section(self.responder),
            "request": section(self.request),
            "actions": [spec.to_dict() for spec in self.actions],
        }


_DURATIONS = {
    "Prefetch": ("min_delay", "max_delay", "backoff_base", "backoff_cap"),
    "Responder": ("timeout", "skew", "max_age"),
    "Request": ("budget", "lease_ttl"),
}
_SECTIONS = {"locks": Locks, "prefetch": Prefetch, "responder": Responder, "request": Request}
_TOP = {"cache", "certificates", "state", "actions", *_SECTIONS}


def default_path() -> Path | None:
    env = os.environ.get("STAPLECTL_CONFIG")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    candidates = [
        (Path(xdg) if xdg else Path.home() / ".config") / "staplectl" / "config.toml",
        Path("/etc/staplectl/config.toml"),
    ]
    return next((p for p in candidates if p.is_file()), None)


def load(path: Path | None = None, *, explicit: bool = False) -> Config:
    """Load a configuration file; with no file, the defaults.

    ``explicit``: the path was named by the operator, so a missing file is
    an error rather than "use the defaults".
    """
    if path is None:
        path = default_path()
        explicit = explicit or bool(os.environ.get("STAPLECTL_CONFIG"))
    if path is None:
        return Config()
    try:
        text = path.read_text()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such configuration file") from None
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(data, path)


def from_dict(data: dict[str, Any], path: Path | None = None) -> Config:
    where = str(path) if path else "configuration"
    unknown = set(data) - _TOP
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_TOP))})"
        )
    config = Config(path=path)
    if "cache" in data:
        config.cache = _typed(where, "cache", data["cache"], str)
    if "state" in data:
        config.state = Path(_typed(where, "state", data["state"], str)).expanduser()
    config.certificates = _certificates(where, data.get("certificates", []), path)
    config.actions = parse_actions(where, data.get("actions", []), path.parent if path else Path.cwd())
    for name, cls in _SECTIONS.items():
        if name in data:
            setattr(config, name, _section(where, name, data[name], cls))
    try:
        config.policy()
    except ValueError as exc:
        raise ConfigError(f"{where}: [prefetch]: {exc}") from None
    return config


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _typed(where: str, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} = {value!r} should be {_KIND_NAMES.get(kind, kind.__name__)}")
    return value


def _section(where: str, name: str, table: Any, cls: type) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{name}] should be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = set(table) - set(known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {name}.{sorted(unknown)[0]} (known in [{name}]: {', '.join(known)})"
        )
    values: dict[str, Any] = {}
    for key, value in table.items():
        qualified = f"{name}.{key}"
        if key in _DURATIONS.get(cls.__name__, ()):
            try:
                values[key] = parse_duration(value, f"{where}: {qualified}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        elif key == "directory":
            values[key] = Path(_typed(where, qualified, value, str)).expanduser()
        elif key == "allow":
            values[key] = _networks(where, qualified, value)
        elif qualified == "responder.proxy":
            values[key] = check_proxy(_typed(where, qualified, value, str), f"{where}: {qualified}")
        elif qualified == "responder.no_proxy":
            values[key] = _strings(where, qualified, value)
        elif qualified == "responder.hash":
            values[key] = check_hash(_typed(where, qualified, value, str), f"{where}: {qualified} = {value!r}")
        else:
            values[key] = _typed(where, qualified, value, type(getattr(cls(), key)))
        if qualified in BOUNDS:
            try:
                check_bound(qualified, values[key], where=where)
            except OutOfBoundsError as exc:
                raise ConfigError(str(exc)) from None
    return cls(**values)


def check_hash(name: str, what: str) -> str:
    """A CertID hash name, lower-cased, or the error naming ``what`` (where the
    value was given: "--hash md5", "FILE: responder.hash = 'md5'") and the choices."""
    if name.lower() not in CERTID_HASHES:
        raise ConfigError(f"{what}: unsupported CertID hash (use one of {', '.join(CERTID_HASHES)})")
    return name.lower()


def check_proxy(url: str, what: str) -> str:
    try:
        parse_proxy(url, what)
    except InputError as error:
        raise ConfigError(str(error)) from None
    return url


def _strings(where: str, key: str, items: Any) -> list[str]:
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where}: {key} should be a list of strings")
    return items


def _networks(where: str, key: str, items: Any) -> list[str]:
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where}: {key} should be a list of networks, e.g. [\"loopback\", \"10.20.0.0/16\"]")
    try:
        parse_allow(items)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None
    return items


def _certificates(where: str, items: Any, path: Path | None) -> list[CertSpec]:
    if not isinstance(items, list):
        raise ConfigError(f"{where}: certificates should be a list of paths or tables")
    base = path.parent if path else Path.cwd()

    def resolve(text: str) -> str:
        # relative paths are relative to the configuration file, not the cwd
        expanded = os.path.expanduser(text)
        return expanded if os.path.isabs(expanded) else str(base / expanded)

    specs = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            specs.append(CertSpec(resolve(item)))
            continue
        if not isinstance(item, dict) or "path" not in item:
            raise ConfigError(f"{where}: certificates[{index}] should be a path or a table with 'path'")
        unknown = set(item) - {"path", "issuer", "url"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown key certificates[{index}].{sorted(unknown)[0]} (known: path, issuer, url)"
            )
        issuer = item.get("issuer")
        specs.append(
            CertSpec(
                resolve(_typed(where, f"certificates[{index}].path", item["path"], str)),
                issuer=Path(resolve(issuer)) if issuer else None,
                url=item.get("url"),
            )
        )
    return specs
