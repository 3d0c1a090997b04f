"""The Cloud Run GPU job that fine-tunes one Gemma model: `python -m trainer`.

Nothing here imports torch at module level; the heavy stack is imported by the
functions that need it, so `import trainer.main` works on a machine without it.
"""
