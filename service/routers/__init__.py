"""HTTP routers: thin handlers that parse, validate, submit and answer (no torch here)."""
