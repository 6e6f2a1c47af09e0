# The operator image: the operator extra only (no torch), running as an unprivileged user.
# `make images` builds it as scaleml/operator:<version>, the image manifests/ deploys.
FROM python:3.11.14-slim-trixie AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/scaleml
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY operator operator
COPY workloads workloads
RUN /opt/scaleml/bin/pip install '.[operator]'

# The build stage's compilers and sources stay behind: only the environment is copied.
FROM python:3.11.14-slim-trixie
ENV PATH=/opt/scaleml/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/scaleml /opt/scaleml
# The uid the operator's Deployment runs as (manifests/base/operator.yaml).
USER 65532:65532
ENTRYPOINT ["scaleml"]
CMD ["operator"]
