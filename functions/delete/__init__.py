"""The delete Cloud Function (its main.py is the deployable's entry point)."""
