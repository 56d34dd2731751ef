"""Where staples live: the providers (the local SQLite store, memcached,
redis, dbm; each says whether it needs a cache mutex), the cache that wraps
one and takes the mutex when asked, and reading entries back for people
(inspection)."""
