"""staplectl's engine: OCSP fetch and validation, cache providers, locks.

Never imports staplectl, typer, rich or textual: every front end shares it.
"""
