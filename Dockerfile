# qscope image. GPU hosts: the default CUDA base. CPU-only: --build-arg BASE=python:3.11-slim-bookworm
#   docker build -t qscope .                                   (CUDA)
#   docker build -t qscope:cpu --build-arg BASE=python:3.11-slim-bookworm --build-arg TORCH=torch==2.13.0 .
ARG BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
FROM ${BASE}

ARG TORCH="torch>=2.4"
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    QSCOPE_DATA_DIR=/data \
    QSCOPE_DEMO_DIR=/data/demo

# Python, and the Debian text corpora the embedded default trains on (besides the stdlib sources).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip fortunes jargon-text make curl \
 && (apt-get install -y --no-install-recommends python3.11-doc || apt-get install -y --no-install-recommends python3-doc) \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/qscope
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir "${TORCH}"
COPY pyproject.toml README.md ./
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY scripts ./scripts
RUN pip install --no-cache-dir .

VOLUME ["/data", "/cache"]
EXPOSE 8000
CMD ["qscope", "demo"]
