# syntax=docker/dockerfile:1
# One image for the CLI and (later) the service. PyPI's Linux torch wheel carries the CUDA
# runtime, so the same image runs on CPU or, with the NVIDIA container runtime, on a GPU.
# The GPU-tuned image (CUDA/TensorRT base) comes with the scale-out work.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir torch==2.13.0
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service
COPY export ./export
RUN pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 resshift
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER resshift
WORKDIR /home/resshift
# Model directories (resshift import-official output) are mounted here.
VOLUME ["/models"]
ENTRYPOINT ["resshift"]
CMD ["--help"]
