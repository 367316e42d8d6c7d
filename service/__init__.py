"""HTTP service (FastAPI): validation, batching scheduler, worker, metrics.

Built on top of ``model``; see docs/design.md. Importing it stays cheap (no torch at import).
"""
