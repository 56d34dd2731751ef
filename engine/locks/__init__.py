"""Fetch locks: one per certificate, across threads and processes, with
their shared figures (open file description locks on one file)."""
