"""Defects the API fuzz test (tests/test_fuzz.py) found and nobody has fixed yet: qualname ->
"parameter:kind ...". The fuzz test fails on a finding not listed here AND on an entry that no longer
fails (remove it when you fix it). Each entry is a bug to fix, not an accepted behaviour (those are
ACCEPTED in tests/test_fuzz.py, with their reasons)."""

KNOWN: dict[str, str] = {}
