"""A grain's append-only, fenced journal in Redis (store.py) and its grain-side API
(journal.py)."""
