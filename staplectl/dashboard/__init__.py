"""staplectl dashboard: a live Textual view of staple freshness and lock contention.

Nothing is imported here on purpose: ``snapshot`` (the data, no textual,
no rich), ``rows`` and ``panels`` (rich renderables, no textual) must stay
importable without pulling in the app.
"""
