"""Plain helpers shared by the test modules (fixtures live in the conftest.py files).

paths   -- where the repository and ../shared (reference vectors, data) are
models  -- tiny random ResShift and DiffIR models, the tiny training recipe, rel_err
images  -- a synthetic photo, PNG encode/decode, a uint8 PSNR
service -- app clients, a live uvicorn server, `resshift serve` processes, polling

Split by what they import, so that a model test does not pull in the service's
dependencies (fastapi, uvicorn, httpx) just to get a path or a tiny model.
"""
