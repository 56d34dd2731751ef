"""The engine's public API: everything a front end (the CLI, the prefetch
service, the dashboard) may use, and nothing else.

``staplectl/`` imports from here only (tests/test_layers.py enforces it), so
that the packages behind it can change without touching the front ends.
The names are grouped as the engine is (docs/design.md, "The layers"):

- certificates and OCSP (engine.ocsp): loading certificates and finding
  their files, staples, validation settings, a response as text;
- responders (engine.responders): fetching, transport settings, the
  address policy, responder health;
- the store (engine.store): opening a cache, its entries, inspection,
  writing files atomically;
- locks (engine.locks): fetch locks and their figures;
- refreshing (engine.refresh): the request path and a refresh (Stapler),
  many refreshes at once (Fanout), the prefetch worker, freshness rules,
  the worker's state;
- what a TLS server really staples (engine.probe);
- building it from resolved settings (engine.assembly), and running
  warm's refreshes in worker processes (engine.processes);
- and the plumbing every layer shares: errors, clock, durations, bounds,
  redaction, the state directory.

Each name loads on first use (PEP 562): ``from engine.api import Leaf``
imports the module that defines Leaf, not the whole engine, so that a
command starts with only what it uses (`staplectl --version` loads no
cryptography; tests/cli/test_startup.py keeps it so).
"""

from __future__ import annotations

import importlib
from typing import Any

#: every public name: (the module that defines it, its name there)
_WHERE: dict[str, tuple[str, str]] = {
    # building the engine
    "EngineSettings": ("engine.assembly", "EngineSettings"),
    "build_reader": ("engine.assembly", "build_reader"),
    "build_stapler": ("engine.assembly", "build_stapler"),
    "NO_OCSP": ("engine.refresh.outcome", "NO_OCSP"),
    "Outcome": ("engine.refresh.outcome", "Outcome"),
    "Team": ("engine.processes", "Team"),
    "failed": ("engine.refresh.outcome", "failed"),
    "no_responder": ("engine.refresh.outcome", "no_responder"),
    "must_staple_without_ocsp": ("engine.refresh.outcome", "must_staple_without_ocsp"),
    "outcome_of": ("engine.refresh.outcome", "outcome_of"),
    "process_count": ("engine.processes", "process_count"),
    # plumbing
    "BOUNDS": ("engine.bounds", "BOUNDS"),
    "OutOfBoundsError": ("engine.bounds", "OutOfBoundsError"),
    "check_bound": ("engine.bounds", "check"),
    "SYSTEM_CLOCK": ("engine.clock", "SYSTEM_CLOCK"),
    "Clock": ("engine.clock", "Clock"),
    "iso": ("engine.clock", "iso"),
    "to_datetime": ("engine.clock", "to_datetime"),
    "format_duration": ("engine.durations", "format_duration"),
    "parse_duration": ("engine.durations", "parse_duration"),
    "STORE_DOWN_REASONS": ("engine.errors", "STORE_DOWN_REASONS"),
    "CacheURIError": ("engine.errors", "CacheURIError"),
    "InputError": ("engine.errors", "InputError"),
    "IssuerNotFoundError": ("engine.errors", "IssuerNotFoundError"),
    "MustStapleWithoutOCSPError": ("engine.errors", "MustStapleWithoutOCSPError"),
    "StapleError": ("engine.errors", "StapleError"),
    "UnexpectedError": ("engine.errors", "UnexpectedError"),
    "state_dir": ("engine.paths", "state_dir"),
    "redact": ("engine.redact", "redact"),
    # what a server staples
    "Judgement": ("engine.probe", "Judgement"),
    "ProbeError": ("engine.probe", "ProbeError"),
    "Stapled": ("engine.probe", "Stapled"),
    "handshake": ("engine.probe", "handshake"),
    "judge": ("engine.probe", "judge"),
    "split_server": ("engine.probe", "split_server"),
    # certificates and OCSP
    "CertSpec": ("engine.ocsp.certspec", "CertSpec"),
    "LoadResult": ("engine.ocsp.certfiles", "LoadResult"),
    "Loading": ("engine.ocsp.certfiles", "Loading"),
    "load_all": ("engine.ocsp.certfiles", "load_all"),
    "Leaf": ("engine.ocsp.certs", "Leaf"),
    "is_must_staple": ("engine.ocsp.certs", "is_must_staple"),
    "load_leaf": ("engine.ocsp.certs", "load_leaf"),
    "ocsp_urls": ("engine.ocsp.certs", "ocsp_urls"),
    "serial_text": ("engine.ocsp.certs", "serial_text"),
    "read_certificates": ("engine.ocsp.certs", "read_certificates"),
    "CERTID_HASHES": ("engine.bounds", "CERTID_HASHES"),
    "describe": ("engine.ocsp.response_text", "describe"),
    "render": ("engine.ocsp.response_text", "render"),
    "GOOD": ("engine.ocsp.staple", "GOOD"),
    "Staple": ("engine.ocsp.staple", "Staple"),
    "staple_end": ("engine.ocsp.staple", "staple_end"),
    "DEFAULT_MAX_AGE": ("engine.bounds", "DEFAULT_MAX_AGE"),
    "DEFAULT_SKEW": ("engine.bounds", "DEFAULT_SKEW"),
    "ValidationOptions": ("engine.ocsp.validate", "ValidationOptions"),
    # responders
    "parse_allow": ("engine.responders.addresses", "parse_allow"),
    "FetchOptions": ("engine.refresh.fetch", "FetchOptions"),
    "fetch_staple": ("engine.refresh.fetch", "fetch"),
    "ResponderDownError": ("engine.responders.health", "ResponderDownError"),
    "ResponderHealth": ("engine.responders.health", "ResponderHealth"),
    "ResponderState": ("engine.responders.health", "ResponderState"),
    "responder_key": ("engine.responders.health", "responder_key"),
    "ProxySettings": ("engine.responders.proxy", "ProxySettings"),
    "parse_no_proxy": ("engine.responders.proxy", "parse_no_proxy"),
    "parse_proxy": ("engine.responders.proxy", "parse_proxy"),
    "DEFAULT_MAX_SIZE": ("engine.bounds", "DEFAULT_MAX_SIZE"),
    "DEFAULT_TIMEOUT": ("engine.bounds", "DEFAULT_TIMEOUT"),
    "TransportOptions": ("engine.responders.transport", "TransportOptions"),
    "check_url": ("engine.responders.transport", "check_url"),
    # the store
    "check_output": ("engine.atomic", "check_output"),
    "check_replaceable": ("engine.atomic", "check_replaceable"),
    "remove_stale_temporaries": ("engine.atomic", "remove_stale_temporaries"),
    "write_atomic": ("engine.atomic", "write_atomic"),
    "write_output": ("engine.atomic", "write_output"),
    "STORE_ERRORS": ("engine.store.cache", "STORE_ERRORS"),
    "Cache": ("engine.store.cache", "Cache"),
    "Found": ("engine.inspection", "Found"),
    "Inspection": ("engine.inspection", "Inspection"),
    "KnownCertificates": ("engine.inspection", "KnownCertificates"),
    "cert_sha1": ("engine.ocsp.certs", "cert_sha1"),
    "inspect_entry": ("engine.inspection", "inspect_entry"),
    "default_cache_uri": ("engine.store.providers", "default_cache_uri"),
    "open_provider": ("engine.store.providers", "open_provider"),
    "Entry": ("engine.store.providers.base", "Entry"),
    "DEFAULT_NAMESPACE": ("engine.store.providers.layout", "DEFAULT_NAMESPACE"),
    "staple_key": ("engine.store.providers.layout", "staple_key"),
    # locks
    "DEFAULT_STRIPES": ("engine.bounds", "DEFAULT_STRIPES"),
    "FetchLocks": ("engine.locks.fetchlocks", "FetchLocks"),
    "stripe_of": ("engine.locks.fetchlocks", "stripe_of"),
    "STATS_FILE": ("engine.locks.stats", "STATS_FILE"),
    "LockStatsError": ("engine.locks.stats", "LockStatsError"),
    "StripeStats": ("engine.locks.stats", "StripeStats"),
    "read_stats": ("engine.locks.stats", "read_stats"),
    # refreshing
    "ActionError": ("engine.refresh.actions", "ActionError"),
    "ActionEvent": ("engine.refresh.actions", "ActionEvent"),
    "ActionResult": ("engine.refresh.actions", "ActionResult"),
    "ActionRunner": ("engine.refresh.actions", "ActionRunner"),
    "ActionState": ("engine.refresh.actions", "ActionState"),
    "Fanout": ("engine.refresh.fanout", "Fanout"),
    "DEFAULT_POLICY": ("engine.refresh.freshness", "DEFAULT_POLICY"),
    "FreshnessPolicy": ("engine.refresh.freshness", "FreshnessPolicy"),
    "expires_at": ("engine.refresh.freshness", "expires_at"),
    "is_usable": ("engine.refresh.freshness", "is_usable"),
    "renewal_point": ("engine.refresh.freshness", "renewal_point"),
    "seconds_left": ("engine.refresh.freshness", "seconds_left"),
    "PrefetchWorker": ("engine.refresh.prefetch", "PrefetchWorker"),
    "WorkerEvent": ("engine.refresh.prefetch", "WorkerEvent"),
    "WorkerOptions": ("engine.refresh.prefetch", "WorkerOptions"),
    "Refresh": ("engine.refresh.stapler", "Refresh"),
    "StapleReader": ("engine.refresh.reader", "StapleReader"),
    "Stapler": ("engine.refresh.stapler", "Stapler"),
    "StaplerOptions": ("engine.refresh.stapler", "StaplerOptions"),
    "CertState": ("engine.refresh.worker_state", "CertState"),
    "Heartbeat": ("engine.refresh.worker_state", "Heartbeat"),
    "HistoryEntry": ("engine.refresh.worker_state", "HistoryEntry"),
    "StateStore": ("engine.refresh.worker_state", "StateStore"),
    "StateStoreError": ("engine.refresh.worker_state", "StateStoreError"),
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'engine.api' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
