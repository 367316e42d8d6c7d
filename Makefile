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

.PHONY: install browser test serve bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "$(TORCH_REQ)"
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The web page's end-to-end test drives Debian's headless Chromium. Installed here when
# missing and this user may (root or passwordless sudo); otherwise that one test skips
# and says which packages it needs.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
		echo "installing Debian chromium + chromium-driver for the web page test"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null || echo "chromium install failed: the web page test will skip"; \
	else echo "no chromium and no apt-get/root: the web page test will skip"; fi

test: $(STAMP) browser
	$(PY) -m pytest -q

serve: $(STAMP)
	$(VENV)/bin/resshift serve

bench: $(STAMP)
	$(PY) bench/bench_core.py

# The one-shot GPU check (docs/gpu.md): pytest -m gpu, engines, fp16 fidelity, throughput
# and the service on cuda:0, into $(GPU_OUT)/gpu_check.{json,md}. On a machine whose own
# python already has a CUDA torch (no network): make gpu-check GPU_PY=python3.
# GPU_ARGS=--dry-run runs it on a CPU (CI does, so it cannot rot).
GPU_OUT  ?= gpu-check-results
GPU_ARGS ?=
ifeq ($(origin GPU_PY), undefined)
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py $(GPU_OUT) $(GPU_ARGS)
else
gpu-check:
	$(GPU_PY) bench/gpu_check.py $(GPU_OUT) $(GPU_ARGS)
endif

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
