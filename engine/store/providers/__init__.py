"""Cache providers, chosen with a URI.

- ``local:`` or ``local:PATH``: the embedded default (SQLite, see local.py)
- ``dbm:PATH``: a dbm file; needs the engine's cache mutex
- ``memcache://HOST:PORT[,HOST:PORT...][?namespace=...&timeout=...]``
- ``redis://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][/DB][?namespace=...&timeout=...&password_file=...]``,
  and ``rediss://`` for TLS (``&ca_file=...``)

A redis password need not be in the URI, where it would be seen in ``ps``,
in the configuration and in shell history: ``?password_file=PATH`` reads
it from a file, else ``$STAPLECTL_REDIS_PASSWORD`` holds it (as
``REDISCLI_AUTH`` does for redis-cli). A URI is printed with its password
replaced by ``***`` (engine.redact).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from engine.bounds import OutOfBoundsError, check
from engine.errors import CacheURIError
from engine.paths import state_dir
from engine.store.providers.base import NO_ENTRY, Entry, Provider
from engine.store.providers.layout import DEFAULT_NAMESPACE
from engine.redact import redact

__all__ = ["NO_ENTRY", "Entry", "Provider", "open_provider", "default_cache_uri", "SCHEMES"]

SCHEMES = ("local", "dbm", "memcache", "redis", "rediss")
#: the environment variable a redis password may come from
PASSWORD_ENV = "STAPLECTL_REDIS_PASSWORD"

LOCAL_DB_NAME = "staples.db"


def default_cache_uri() -> str:
    return f"local:{state_dir() / LOCAL_DB_NAME}"


def _local_path(uri: str, rest: str) -> Path:
    default = state_dir() / LOCAL_DB_NAME
    if not rest:
        return default
    path = Path(rest).expanduser()
    if path.is_dir():
        return path / LOCAL_DB_NAME
    if path != default:  # the state directory is ours to make
        _check_directory(uri, path)
    return path


def _check_directory(uri: str, path: Path) -> None:
    """A store the operator named lives in a directory that exists: a typo in
    a cron line must not create a new, empty store (which export would take
    for "nothing is cached" and remove every staple file)."""
    if not path.parent.is_dir():
        raise CacheURIError(
            f"cache URI {redact(uri)!r}: directory {path.parent} does not exist "
            "(create it first; the default store is plain 'local:')"
        )


def _servers(uri: str, netloc: str, default_port: int) -> list[tuple[str, int]]:
    servers = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            raise CacheURIError(f"cache URI {redact(uri)!r}: empty server in the server list")
        host, sep, port_text = part.rpartition(":")
        if not sep or part.endswith("]"):
            host, port_text = part, str(default_port)
        host = host.strip("[]")
        if not host:
            raise CacheURIError(f"cache URI {redact(uri)!r}: server {part!r} has no host")
        try:
            port = int(port_text)
        except ValueError:
            raise CacheURIError(f"cache URI {redact(uri)!r}: port {port_text!r} is not a number") from None
        if not 0 < port < 65536:
            raise CacheURIError(f"cache URI {redact(uri)!r}: port {port} is out of range")
        servers.append((host, port))
    return servers


def _options(uri: str, query: str, allowed: set[str]) -> dict[str, str]:
    options = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name not in allowed:
            raise CacheURIError(
                f"cache URI {redact(uri)!r}: unknown option {name!r} (known: {', '.join(sorted(allowed))})"
            )
        options[name] = values[-1]
    return options


def _timeout(uri: str, options: dict[str, str]) -> float:
    text = options.get("timeout", "2")
    try:
        value = float(text)
    except ValueError:
        raise CacheURIError(f"cache URI {redact(uri)!r}: timeout {text!r} is not a number of seconds") from None
    try:
        return check("cache.timeout", value, option="?timeout=")
    except OutOfBoundsError as error:
        raise CacheURIError(f"cache URI {redact(uri)!r}: {error}") from None


def open_provider(uri: str | None = None, *, read_only: bool = False) -> Provider:
    """Open the provider a cache URI names. Bad URIs raise CacheURIError.

    ``read_only``: for commands that only read. A local store or dbm file
    is neither written nor created (a missing one reads as empty).
    """
    uri = uri or default_cache_uri()
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme not in SCHEMES:
        raise CacheURIError(
            f"cache URI {redact(uri)!r}: unknown scheme {scheme!r} (expected one of: "
            + ", ".join(f"{s}:" for s in SCHEMES)
            + ")"
        )
    if scheme == "local":
        from engine.store.providers.local import LocalProvider

        provider: Provider = LocalProvider(_local_path(uri, rest), read_only=read_only)
    elif scheme == "dbm":
        from engine.store.providers.dbmfile import DbmProvider

        if not rest:
            raise CacheURIError(f"cache URI {redact(uri)!r}: dbm needs a file path (dbm:PATH)")
        path = Path(rest).expanduser()
        _check_directory(uri, path)
        provider = DbmProvider(path, read_only=read_only)
    else:
        parts = urlsplit(uri)
        if not parts.netloc:
            raise CacheURIError(f"cache URI {redact(uri)!r}: no server (expected {scheme}://HOST:PORT)")
        netloc = parts.netloc
        username = password = None
        if "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            user_text, _, password_text = userinfo.partition(":")
            username, password = unquote(user_text) or None, unquote(password_text) or None
        if scheme == "memcache":
            from engine.store.providers.memcache import MemcacheProvider

            options = _options(uri, parts.query, {"namespace", "timeout"})
            if parts.path not in ("", "/"):
                raise CacheURIError(f"cache URI {redact(uri)!r}: memcache takes no path")
            provider = MemcacheProvider(
                _servers(uri, netloc, 11211),
                namespace=options.get("namespace", DEFAULT_NAMESPACE),
                timeout=_timeout(uri, options),
            )
        else:
            from engine.store.providers.redis import RedisProvider

            tls = scheme == "rediss"
            known = {"namespace", "timeout", "password_file", *({"ca_file"} if tls else set())}
            options = _options(uri, parts.query, known)
            db_text = parts.path.strip("/") or "0"
            if not db_text.isdigit():
                raise CacheURIError(f"cache URI {redact(uri)!r}: database {db_text!r} is not a number")
            provider = RedisProvider(
                _servers(uri, netloc, 6379),
                db=int(db_text),
                namespace=options.get("namespace", DEFAULT_NAMESPACE),
                timeout=_timeout(uri, options),
                username=username,
                password=password or _password(uri, options),
                tls=tls,
                ca_file=options.get("ca_file"),
            )
    provider.uri = redact(uri)  # for display: never the password
    return provider


def _password(uri: str, options: dict[str, str]) -> str | None:
    """The password from ``?password_file=``, else from the environment."""
    file = options.get("password_file")
    if file is None:
        return os.environ.get(PASSWORD_ENV) or None
    try:
        text = Path(file).expanduser().read_text()
    except OSError as exc:
        raise CacheURIError(f"cache URI {redact(uri)!r}: password_file {file}: {exc.strerror}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise CacheURIError(f"cache URI {redact(uri)!r}: password_file {file} is empty")
    return password
