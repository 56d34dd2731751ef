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
"""

from __future__ import annotations

from engine.assembly import EngineSettings, build_reader, build_stapler
from engine.bounds import BOUNDS, OutOfBoundsError
from engine.bounds import check as check_bound
from engine.clock import SYSTEM_CLOCK, Clock, iso, to_datetime
from engine.durations import format_duration, parse_duration
from engine.errors import (
    STORE_DOWN_REASONS,
    CacheURIError,
    InputError,
    IssuerNotFoundError,
    MustStapleWithoutOCSPError,
    StapleError,
    UnexpectedError,
)
from engine.locks.fetchlocks import DEFAULT_STRIPES, FetchLocks, stripe_of
from engine.locks.stats import STATS_FILE, LockStatsError, StripeStats, read_stats
from engine.ocsp.certfiles import CertSpec, LoadResult, Loading, load_all
from engine.ocsp.certs import Leaf, is_must_staple, load_leaf, ocsp_urls, read_certificates, serial_text
from engine.ocsp.request import CERTID_HASHES
from engine.ocsp.response_text import describe, render
from engine.ocsp.staple import GOOD, Staple, staple_end
from engine.ocsp.validate import DEFAULT_MAX_AGE, DEFAULT_SKEW, ValidationOptions
from engine.paths import state_dir
from engine.probe import Judgement, ProbeError, Stapled, handshake, judge, split_server
from engine.processes import Team, process_count
from engine.redact import redact
from engine.refresh.actions import ActionError, ActionEvent, ActionResult, ActionRunner, ActionState
from engine.refresh.fanout import Fanout
from engine.refresh.freshness import (
    DEFAULT_POLICY,
    FreshnessPolicy,
    expires_at,
    is_usable,
    renewal_point,
    seconds_left,
)
from engine.refresh.outcome import NO_OCSP, Outcome, failed, must_staple_without_ocsp, no_responder, outcome_of
from engine.refresh.prefetch import PrefetchWorker, WorkerEvent, WorkerOptions
from engine.refresh.reader import StapleReader
from engine.refresh.stapler import Refresh, Stapler, StaplerOptions
from engine.refresh.worker_state import CertState, Heartbeat, HistoryEntry, StateStore, StateStoreError
from engine.responders.addresses import parse_allow
from engine.refresh.fetch import FetchOptions
from engine.refresh.fetch import fetch as fetch_staple
from engine.responders.health import ResponderDownError, ResponderHealth, ResponderState, responder_key
from engine.responders.proxy import ProxySettings, parse_no_proxy, parse_proxy
from engine.responders.transport import DEFAULT_MAX_SIZE, DEFAULT_TIMEOUT, TransportOptions, check_url
from engine.atomic import (
    check_output,
    check_replaceable,
    remove_stale_temporaries,
    write_atomic,
    write_output,
)
from engine.store.cache import STORE_ERRORS, Cache
from engine.inspection import Found, Inspection, KnownCertificates, cert_sha1, inspect_entry
from engine.store.providers import default_cache_uri, open_provider
from engine.store.providers.base import Entry
from engine.store.providers.layout import DEFAULT_NAMESPACE, staple_key

__all__ = [
    # building the engine
    "EngineSettings", "build_reader", "build_stapler", "NO_OCSP", "Outcome", "Team", "failed", "no_responder",
    "must_staple_without_ocsp", "outcome_of", "process_count",
    # plumbing
    "BOUNDS", "OutOfBoundsError", "check_bound", "SYSTEM_CLOCK", "Clock", "iso", "to_datetime",
    "format_duration", "parse_duration", "STORE_DOWN_REASONS", "CacheURIError", "InputError",
    "IssuerNotFoundError", "MustStapleWithoutOCSPError", "StapleError", "UnexpectedError", "state_dir", "redact",
    # what a server staples
    "Judgement", "ProbeError", "Stapled", "handshake", "judge", "split_server",
    # certificates and OCSP
    "CertSpec", "LoadResult", "Loading", "load_all", "Leaf", "is_must_staple", "load_leaf", "ocsp_urls", "serial_text",
    "read_certificates", "CERTID_HASHES", "describe", "render", "GOOD", "Staple", "staple_end", "DEFAULT_MAX_AGE", "DEFAULT_SKEW",
    "ValidationOptions",
    # responders
    "parse_allow", "FetchOptions", "fetch_staple", "ResponderDownError", "ResponderHealth", "ResponderState",
    "responder_key", "ProxySettings", "parse_no_proxy", "parse_proxy", "DEFAULT_MAX_SIZE", "DEFAULT_TIMEOUT", "TransportOptions", "check_url",
    # the store
    "check_output", "check_replaceable", "remove_stale_temporaries", "write_atomic", "write_output",
    "STORE_ERRORS", "Cache", "Found", "Inspection", "KnownCertificates", "cert_sha1", "inspect_entry",
    "default_cache_uri", "open_provider", "Entry", "DEFAULT_NAMESPACE", "staple_key",
    # locks
    "DEFAULT_STRIPES", "FetchLocks", "stripe_of", "STATS_FILE", "LockStatsError", "StripeStats", "read_stats",
    # refreshing
    "ActionError", "ActionEvent", "ActionResult", "ActionRunner", "ActionState", "Fanout", "DEFAULT_POLICY",
    "FreshnessPolicy", "expires_at", "is_usable", "renewal_point", "seconds_left",
    "PrefetchWorker", "WorkerEvent", "WorkerOptions", "Refresh", "StapleReader", "Stapler", "StaplerOptions", "CertState",
    "Heartbeat", "HistoryEntry", "StateStore", "StateStoreError",
]  # fmt: skip
