"""Custom checkov policies for what the built-in GCP checks leave out (tfcheck.py loads them)."""
