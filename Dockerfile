# syntax=docker/dockerfile:1.7
# synthserve images.
#   serving, CPU (default):  docker build -t synthserve/serve:0.1.0 .
#   serving, GPU:            docker build --build-arg VARIANT=gpu -t synthserve/serve:0.1.0-gpu .
#   training (torch):        docker build --target train -t synthserve/train:0.1.0 .
# The serving image holds no torch: ONNX Runtime (CPU build, or onnxruntime-gpu on a CUDA runtime base),
# grpcio and prometheus-client. It runs as a non-root user with the shipped model store baked in at /models;
# mounting a volume there (Kubernetes) serves that store instead.

ARG VARIANT=cpu
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG TORCH_VERSION=2.13.0
# The CPU wheel index keeps the training image free of CUDA; set it to PyPI's index for a CUDA training image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# ---- the project as one wheel (pure Python), shared by every image -----------------------------------------
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- CPU serving: Debian's python3.11 in a venv, so the venv runs unchanged on distroless python3-debian12 ----
FROM debian:bookworm-slim AS venv-cpu
# Debian's security updates replace exact versions, so pinning them would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
# The project's own wheel; its dependencies take their ranges from pyproject.toml.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "$(ls /wheels/synthserve-*.whl)[serve]"

FROM gcr.io/distroless/python3-debian12:nonroot AS runtime-cpu

# ---- GPU serving: CUDA runtime + cuDNN (what onnxruntime-gpu loads), the distribution's Python ---------------
FROM ${CUDA_RUNTIME_IMAGE} AS runtime-gpu
# Ubuntu's security updates replace exact versions too.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin nonroot

FROM runtime-gpu AS venv-gpu
COPY --from=wheel /wheels /wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "$(ls /wheels/synthserve-*.whl)[gpu]"

# ---- training: torch pinned first (a bare `torch` would pull another build), then the train extra ------------
FROM python:3.11-slim-bookworm AS train
ARG TORCH_VERSION
ARG TORCH_INDEX_URL
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir "$(ls /wheels/synthserve-*.whl)[train]" \
    && rm -rf /wheels \
    && useradd --uid 65532 --user-group --create-home --shell /usr/sbin/nologin nonroot
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["synthserve", "train"]
CMD ["--help"]

# ---- serving image (the default target) -------------------------------------------------------------------
# VARIANT picks one of this file's stages, not an image from a registry, so there is no tag to pin.
# hadolint ignore=DL3006
FROM venv-${VARIANT} AS venv
# Likewise runtime-cpu (distroless) or runtime-gpu (CUDA), both defined above.
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS serve
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
COPY --from=venv /opt/venv /opt/venv
COPY model_store /models
USER 65532:65532
# gRPC (health and reflection included) and Prometheus /metrics.
EXPOSE 50051 9400
ENTRYPOINT ["/opt/venv/bin/synthserve"]
# Every interface: the server's default, 127.0.0.1, is unreachable from outside the container.
CMD ["serve", "--model-store", "/models", "--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9400"]
