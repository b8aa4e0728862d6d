# lyricdist on a CUDA PyTorch runtime. Build from the repository root:
#   docker build -t lyricdist .
#   docker run --rm --gpus all --ipc=host -v lyricdist-data:/data lyricdist demo
#   docker run --rm --init -p 7860:7860 -v lyricdist-data:/data lyricdist app CKPT_A CKPT_B   # the collab page
# Everything a run writes (corpora, runs/, HF/wandb caches) goes under /data, a volume.
# The base image's torch must satisfy pyproject.toml's torch floor and run cuDNN RNNs in bf16 (torch >= 2.10 built for
# CUDA 13: cuDNN >= 9.13; tests/test_launch.py checks the tag). CUDA 13 needs an NVIDIA driver >= 580.
FROM pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/lyricdist
# Dependencies first, in a layer of their own: only a pyproject.toml change reinstalls them, not a code edit.
# The list is pyproject.toml's [project].dependencies plus every runtime extra (the image is lyricdist[all]: it
# scrapes and runs on Ray clusters too); the constraint torch==<the base image's version> keeps the image's CUDA
# torch (pip fails instead of downloading another one if a dependency wanted a different torch).
COPY pyproject.toml ./
RUN python -c "import sys, importlib; toml = importlib.import_module('tomllib' if sys.version_info >= (3, 11) else 'pip._vendor.tomli'); p = toml.load(open('pyproject.toml', 'rb'))['project']; deps = p['dependencies'] + [d for k, v in p['optional-dependencies'].items() if k not in ('all', 'test', 'bench') for d in v]; open('/tmp/requirements.txt', 'w').write(''.join(d + chr(10) for d in deps))" \
    && python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > /tmp/constraints.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/constraints.txt \
    && rm /tmp/requirements.txt /tmp/constraints.txt
# Then the package itself, without dependencies (README.md: the package metadata's long description).
COPY README.md ./
COPY lyricdist ./lyricdist
RUN pip install --no-cache-dir --no-deps . && lyricdist --version
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
    MPLCONFIGDIR=/data/cache/matplotlib \
    GRADIO_SERVER_NAME=0.0.0.0
VOLUME ["/data"]
# `lyricdist app` listens on all of the container's interfaces (GRADIO_SERVER_NAME), reachable only where `-p` publishes
# it; it stops cleanly on SIGTERM, as PID 1 or under `docker run --init` (tini).
EXPOSE 7860
WORKDIR /data
USER 1000:1000

ENTRYPOINT ["lyricdist"]
CMD ["--help"]
