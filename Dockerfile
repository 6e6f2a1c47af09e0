# The operator image: the operator extra only (no torch), running as an unprivileged user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator operator
COPY workloads workloads
RUN pip install '.[operator]' && rm -rf /src
USER 65532:65532
ENTRYPOINT ["scaleml"]
CMD ["operator"]
