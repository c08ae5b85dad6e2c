# Stand-in for nvcr.io/nvidia/pytorch:<release>-py3 on a machine that cannot reach NVIDIA's registry:
# Debian 12's Python 3.11 with pip and the CPU build of the torch pinned by requirements.lock (NVIDIA's
# image: Ubuntu 24.04, Python 3.12, torch with CUDA). Its context (`make containers`): wheels/ and
# requirements.lock.
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-pip python-is-python3 \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
COPY requirements.lock /tmp/requirements.lock
COPY wheels/ /tmp/wheels/
RUN python -m pip install --no-cache-dir -c /tmp/requirements.lock /tmp/wheels/torch-*.whl \
    && python -c "import torch; print('torch', torch.__version__)" \
    && rm -rf /tmp/wheels /tmp/requirements.lock
WORKDIR /workspace
