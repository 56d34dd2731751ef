"""The soak test: staplectl as operated, over time, under faults.

The unit and CLI tests check each part once. This package runs the system
the way an operator runs it, for minutes: the installed `staplectl
prefetch` service as a subprocess, beside one-shot commands (check,
inspect, export, fetch, warm, a dashboard snapshot), while faults come on
a schedule (responders that hang or lie, the cache restarted empty or
down, the service SIGKILLed or given a broken configuration, a
certificate replaced on disk). Invariants are checked from OUTSIDE the
service: the store is read directly, every staple validated with
cryptography by code that shares nothing with the engine.

One module per idea:

    settings    the knobs of one run (SoakSettings) and their defaults
    world       the PKIs, the certificate files, the cache server, the config
    responders  the three OCSP responders, in a child process (a Pipe controls them)
    cacheserver memcached/redis that can be restarted empty on the same port
    ocspcheck   independent validation of a DER OCSPResponse
    store       reading the store as another process would (sqlite ro, memcached, redis)
    service     the prefetch service subprocess: its JSON log, signals, metrics, RSS
    timeline    when each fault ran, and what it excuses (which certificates, when)
    monitor     the continuous outside checks (lapses, lost writes, rollbacks...)
    readers     the one-shot commands, round-robin, and what their output must agree with
    faults      the fault schedule and how each fault is done
    sabotage    violations on purpose (bench/soak.py --sabotage): the harness must fail
    dashboard_snapshot  the real dashboard app, headless, in its own process
    report      the tallies per fault kind, the table and the JSON
    run         one provider's run, from an empty directory to its report

bench/soak.py runs it for N minutes per provider; tests/test_soak.py runs
the same code for about a minute per provider and asserts every invariant.
"""
