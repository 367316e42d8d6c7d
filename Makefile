# Two entry points for a newcomer: `make test` and `make serve`. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

# On a machine without an NVIDIA driver we ask for exactly the CPU torch wheel
# (a local wheel on the CI/dev machines); on a GPU node pip takes the CUDA build.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
ifeq ($(HAS_GPU),1)
TORCH_REQ := torch==2.13.0
else
TORCH_REQ := torch==2.13.0
TORCH_OPTS := --prefer-binary
endif

.PHONY: install test test-all serve bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_OPTS) "$(TORCH_REQ)"
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
