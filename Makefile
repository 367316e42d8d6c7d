# Two entry points for a newcomer: `make test` and `make serve`. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

# torch is asked for by exact version before anything else, so that no dependency can
# pull another build: on the CPU machines here `torch==2.13.0` resolves to the local CPU
# wheel (pip's find-links); on a GPU node PyPI's default Linux wheel is the CUDA build.
TORCH_REQ := torch==2.13.0

.PHONY: install test serve bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "$(TORCH_REQ)"
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

serve: $(STAMP)
	$(VENV)/bin/resshift serve

bench: $(STAMP)
	$(PY) bench/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
