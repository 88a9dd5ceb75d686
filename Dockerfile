# The LBZF code location: `dagster code-server` serving orchestration.definitions over gRPC on port 4000.
#
# One image for every place the pipeline's code runs in production: the code location server the
# webserver and daemon talk to (deploy/workspace.grpc.yaml, or the Helm chart's user deployment), the
# run pods the K8sRunLauncher starts, and the GPU training pod (deploy/k8s/training-pod.yaml).
# Build:  docker build -t <registry>/lbzf-pipeline:<version> .
# Nothing secret is baked in: credentials arrive at run time (env from a Kubernetes Secret, the pod's
# AWS role); see docs/deployment.md.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libGL/glib for OpenCV (Ultralytics pulls the non-headless wheel too), OpenMP for PyTorch on CPU.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 lbzf \
    && useradd --system --uid 10001 --gid lbzf --create-home --home-dir /home/lbzf --shell /usr/sbin/nologin lbzf

WORKDIR /opt/lbzf
# Dependencies are the pins in pyproject.toml (dagster 1.13.27 / libraries 0.29.27, torch, ultralytics,
# onnx...); dagster-k8s at the libraries' version for the K8sRunLauncher's run pods.
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY assets ./assets
COPY resources ./resources
COPY orchestration ./orchestration
RUN pip install --no-compile . "dagster-k8s==0.29.27"

# Writable places for the non-root user: the instance config (mounted over by the Helm chart),
# training runs (a re-run resumes from here; mount a volume), Ultralytics' and matplotlib's caches.
ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    DAGSTER_DEPLOYMENT=prod \
    LBZF_TRAIN_DIR=/var/lib/lbzf/train \
    LBZF_YOLO_CONFIG_DIR=/home/lbzf/.cache/lbzf/ultralytics \
    MPLCONFIGDIR=/home/lbzf/.cache/matplotlib \
    YOLO_OFFLINE=true
RUN mkdir -p "$DAGSTER_HOME" "$LBZF_TRAIN_DIR" \
    && chown -R lbzf:lbzf "$DAGSTER_HOME" /var/lib/lbzf

USER 10001:10001

EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "code-server", "start", "-m", "orchestration.definitions", "-h", "0.0.0.0", "-p", "4000"]
