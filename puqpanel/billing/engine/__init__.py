"""The billing engine: scheduled, set-based, chunked jobs (see runs.py)."""
