"""Datasets without torch: split files, row rules per trainer type, token counts.

Shared by the CLI (`tuning datasets validate`), the validation that runs before any GPU is
claimed, and the trainer, so that a row is judged the same way everywhere.
"""
