"""One folder per Cloud Function; each `main.py` is a thin handler over the `tuning` package."""
