# lyricdist on a CUDA PyTorch runtime. Build from the repository root:
#   docker build -t lyricdist .
#   docker run --rm --gpus all --ipc=host -v lyricdist-data:/data lyricdist demo
# Everything a run writes (corpora, runs/, HF/wandb caches) goes under /data, a volume.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/lyricdist
# The base image's torch satisfies `torch>=2.2`, so pip keeps it (no second multi-GB download).
COPY pyproject.toml README.md ./
COPY lyricdist ./lyricdist
RUN pip install --no-cache-dir . && lyricdist --version
COPY configs ./configs
COPY launch ./launch

RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash lyricdist \
    && mkdir -p /data \
    && chown lyricdist:lyricdist /data

# Caches and outputs on the volume; relative paths in configs (corpus/..., runs/...) resolve under /data too.
ENV HF_HOME=/data/cache/huggingface \
    WANDB_DIR=/data \
    WANDB_CACHE_DIR=/data/cache/wandb \
    WANDB_CONFIG_DIR=/data/cache/wandb-config \
    XDG_CACHE_HOME=/data/cache \
    MPLCONFIGDIR=/data/cache/matplotlib
VOLUME ["/data"]
WORKDIR /data
USER 1000:1000

ENTRYPOINT ["lyricdist"]
CMD ["--help"]
