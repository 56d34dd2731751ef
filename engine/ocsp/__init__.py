"""OCSP itself: certificates and their issuers, the request we write, the
response we validate, the staple we keep. No I/O beyond reading
certificate files."""
