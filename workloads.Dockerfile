# The workload image: training, export, the model agent, the capture proxy and the drift monitor,
# on PyTorch with CUDA, running as an unprivileged user. `make images` builds it as
# scaleml/workloads:<version>, the operator's default workload image.
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY operator operator
COPY workloads workloads
# The base image's torch satisfies the extra, so pip keeps it (and its CUDA build).
RUN pip install '.[workloads]' && rm -rf /src
WORKDIR /
# The uid the operator's pods run as (runAsUser in operator/scaleml_operator/builders/meta.py).
USER 1000:1000
