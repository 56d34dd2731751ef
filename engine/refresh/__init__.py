"""Keeping staples fresh: the request path and one refresh (stapler: fetch
lock, second look, fetch), many refreshes on one thread (fanout, for warm),
and the prefetch worker with its schedule, freshness rules and state."""
