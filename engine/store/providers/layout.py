"""httpd's stapling cache layout, shared by memcached and redis (docs/design.md, "Where the cache meets real servers").

mod_ssl (2.4.44 and later) stores each staple under
``mod_ssl-staple:<lower-case sha1 hex of the leaf DER>``; 2.4.5 to 2.4.43
used ``mod_ssl-stapling``. The value is one flag byte (0x01: valid when
stored, 0x00: an error response) and the DER of the whole OCSPResponse, at
most 10,240 bytes in all. Raw bytes, nothing else, so that httpd reads what
we write and we read what httpd writes.
"""

from __future__ import annotations

import re
import zlib

from engine.errors import EntryFormatError, EntryTooLargeError

DEFAULT_NAMESPACE = "mod_ssl-staple"
LEGACY_NAMESPACE = "mod_ssl-stapling"  # httpd 2.4.5 .. 2.4.43

#: prefix of our own metadata keys; httpd never reads them
META_PREFIX = "staplectl-meta:"
#: prefix of the refresh leases instances sharing a cache take (stapler.py)
LEASE_PREFIX = "staplectl-lease:"

FLAG_VALID = 0x01
FLAG_ERROR = 0x00

#: mod_ssl's MAX_STAPLING_DER
MAX_VALUE_SIZE = 10240

#: memcached reads an expiry above 30 days as an absolute Unix time
MEMCACHED_MAX_TTL = 30 * 24 * 3600 - 1

_CERT_ID = re.compile(r"^[0-9a-f]{40}$")


def is_cert_id(text: str) -> bool:
    return bool(_CERT_ID.match(text))


def staple_key(namespace: str, cert_id: str) -> str:
    return f"{namespace}:{cert_id}"


def meta_key(namespace: str, cert_id: str) -> str:
    # The namespace is part of the metadata key so that two namespaces on
    # one server (httpd before and after 2.4.44) keep their metadata apart.
    return f"{META_PREFIX}{namespace}:{cert_id}"


def lease_key(namespace: str, cert_id: str) -> str:
    """Who refreshes a certificate for every instance sharing the cache."""
    return f"{LEASE_PREFIX}{namespace}:{cert_id}"


def cert_id_from_key(namespace: str, key: str) -> str | None:
    prefix = namespace + ":"
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix):]
    return rest if is_cert_id(rest) else None


def encode_value(flag: int, der: bytes) -> bytes:
    value = bytes([flag]) + der
    if len(value) > MAX_VALUE_SIZE:
        raise EntryTooLargeError(
            f"staple of {len(der)} bytes does not fit httpd's cache entry "
            f"limit of {MAX_VALUE_SIZE} bytes (flag byte included)"
        )
    return value


def decode_value(value: bytes) -> tuple[int, bytes]:
    if not value:
        raise EntryFormatError("empty cache value")
    flag = value[0]
    if flag not in (FLAG_VALID, FLAG_ERROR):
        raise EntryFormatError(f"unknown flag byte 0x{flag:02x} (expected 0x00 or 0x01)")
    return flag, bytes(value[1:])


def apr_server_index(key: str, server_count: int) -> int:
    """The server apr-util's memcache (and redis) client picks for a key.

    apr_memcache_hash_default: ``(crc32(key) >> 16) & 0x7fff``, 0 becomes 1;
    then apr_memcache_find_server_hash_default takes ``h % n`` in the order
    the servers were listed.
    """
    h = (zlib.crc32(key.encode()) >> 16) & 0x7FFF
    if h == 0:
        h = 1
    return h % server_count
