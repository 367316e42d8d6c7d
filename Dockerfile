# syntax=docker/dockerfile:1
# resshift-service images: the API, the workers and the CLI, from one Dockerfile.
#
#   docker build -t resshift:gpu .                  # NVIDIA GPU (the default, last stage)
#   docker build --target cpu -t resshift:cpu .     # CPU only: API processes, CPU workers, CLI
#   docker build --build-arg EXTRAS=gpu,trt -t resshift:gpu-trt .   # + TensorRT engines
#
# Both run `resshift serve --host 0.0.0.0` unless given another command; the role
# (all|api|worker) comes from --role or RESSHIFT_ROLE, everything else from RESSHIFT_*
# variables (docs/service.md, docs/deploy.md). Model directories are mounted read-only
# on /models, the ONNX/TensorRT export cache lives on /cache.

# ---------------------------------------------------------------------------- CPU ----
# torch from PyTorch's CPU index: the same torch 2.13.0 as the Makefile pins, without
# the ~3 GB of CUDA libraries PyPI's Linux wheel brings.
FROM python:3.11.11-slim-bookworm AS cpu-build
ARG TORCH_VERSION=2.13.0
ARG EXTRAS=onnx
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service
COPY export ./export
COPY resshift ./resshift
# The project itself: its dependencies' bounds live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[${EXTRAS}]"

FROM python:3.11.11-slim-bookworm AS cpu
RUN useradd --create-home --uid 10001 --user-group resshift \
    && mkdir -p /models /cache \
    && chown resshift:resshift /cache
COPY --from=cpu-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RESSHIFT_CACHE_DIR=/cache \
    HEALTHCHECK_PORT=8000
USER 10001
WORKDIR /home/resshift
# /models: model directories (`resshift import-official` output), mounted read-only.
# /cache: exported ONNX graphs and TensorRT engines (RESSHIFT_CACHE_DIR), kept across runs.
VOLUME ["/models", "/cache"]
EXPOSE 8000
# /healthz answers while the process does (readiness is /readyz, for orchestrators).
# HEALTHCHECK_PORT must match --port when that is changed. Python, so no curl is needed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTHCHECK_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["resshift"]
CMD ["serve", "--host", "0.0.0.0"]

# ---------------------------------------------------------------------------- GPU ----
# A CUDA *runtime* image is enough (no -devel, no compilers): PyPI's torch 2.13.0 Linux
# wheel is built for CUDA 13.0 and carries its own CUDA, cuDNN and NCCL libraries as pip
# packages, and so does onnxruntime-gpu (CUDA 13 build). What the base image adds is the
# NVIDIA container contract: NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES, and
# NVIDIA_REQUIRE_CUDA=cuda>=13.0, with which the NVIDIA container runtime refuses to start
# the container on a driver too old for CUDA 13 (R580+) instead of failing at the first
# CUDA call. Ubuntu 24.04's Python is 3.12 (the project supports >= 3.10).
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04 AS gpu-build
ARG TORCH_VERSION=2.13.0
ARG EXTRAS=gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# Versions of Ubuntu's python3 come with the (pinned) base image's package lists.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, by exact version, so that no dependency can pull another build.
RUN pip install "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service
COPY export ./export
COPY resshift ./resshift
# The project itself: its dependencies' bounds live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[${EXTRAS}]"

FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04 AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group resshift \
    && mkdir -p /models /cache \
    && chown resshift:resshift /cache
COPY --from=gpu-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RESSHIFT_CACHE_DIR=/cache \
    RESSHIFT_DEVICES=cuda:0 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HEALTHCHECK_PORT=8000
USER 10001
WORKDIR /home/resshift
VOLUME ["/models", "/cache"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTHCHECK_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["resshift"]
CMD ["serve", "--host", "0.0.0.0"]
