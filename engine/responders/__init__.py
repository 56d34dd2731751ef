"""Talking to OCSP responders: the address policy, HTTP over a blocking or a
non-blocking socket, one fetch (request, exchange, validation), and the
shared health of each responder (down: one probe at a time)."""
