# qscope: one image for `qscope serve`, `qscope demo`, `qscope harvest` and `qscope build-demo`.
#   docker build -t qscope:cuda .                          GPU hosts: CUDA runtime base, CUDA build of torch
#   docker build -t qscope:cpu --build-arg VARIANT=cpu .   CPU-only hosts: Debian base, CPU build of torch
#   --build-arg DEMO=1   also builds the embedded default (mini-Qwen) into the image, offline (about 10 min)
# The image holds everything the embedded default is built from (the Python sources and Debian's text
# corpora), so `docker run --network none qscope:cpu qscope build-demo` works on a machine with no network.
ARG VARIANT=cuda

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS base-cuda
ENV TORCH_INDEX=https://download.pytorch.org/whl/cu128

FROM debian:bookworm-slim AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM base-${VARIANT}
ARG TORCH="torch>=2.4"
ARG DEMO=0
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false \
    HF_HOME=/cache/huggingface \
    QSCOPE_HOST=0.0.0.0 \
    QSCOPE_DATA_DIR=/data \
    QSCOPE_DEMO_DIR=/data/demo \
    QSCOPE_CACHE_DIR=/cache/qscope \
    QSCOPE_APP_DB_URL=sqlite:////data/qscope-app.db

# Python, then the text corpora of the embedded default where the distribution has them (each is optional).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
 && for p in python3-doc fortunes jargon-text; do apt-get install -y --no-install-recommends "$p" || true; done \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "${TORCH}"

# An ordinary install: templates, static files and benchmarks ship inside the package; the sources are
# removed once installed.
WORKDIR /opt/qscope
COPY pyproject.toml README.md LICENSE ./
COPY app ./app
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir ".[postgres]" && cd / && rm -rf /opt/qscope
WORKDIR /data

# An unprivileged user owns the data and cache volumes (a new named volume takes the folder's owner).
RUN useradd --create-home --uid 10001 qscope && mkdir -p /data/stores /cache && chown -R qscope /data /cache
USER qscope
RUN if [ "$DEMO" = "1" ]; then HF_HUB_OFFLINE=1 qscope build-demo; fi

VOLUME ["/data", "/cache"]
EXPOSE 8000
CMD ["qscope", "demo", "--db", "/data/stores"]
