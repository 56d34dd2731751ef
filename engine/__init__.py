"""staplectl's engine: keeping OCSP staples fresh, shared by every front end.

The packages, bottom to top (docs/design.md, "The layers"): ``ocsp``
(certificates, the request, the response, validation), ``locks`` (a fetch
lock per certificate), ``responders`` (transport, address policy, health),
``store`` (the cache and its providers), ``refresh`` (the request path, a
refresh, warm's fanout, the prefetch worker), ``inspection``; front ends use
``engine.api`` only. Never imports staplectl, typer, rich or textual.
"""
