# Stand-in for nvcr.io/nvidia/tritonserver:<release>-py3 on a machine that cannot reach NVIDIA's
# registry: CPU only, Triton 2.51 (the nvidia-pytriton wheel's server) on Debian 12 / Python 3.11.
# `make containers` builds it from a context it assembles (emotion_lab.containers.stand_ins):
#   wheels/   the nvidia-pytriton and torch wheels pinned by requirements.lock
#   vendor/   NVIDIA's r24.10 backend sources (../shared/vendor)
#   python/   the project's emotion_triton/{errors,paths}.py and serving/native_backends.py (`make setup`'s code)
ARG BASE

# Stage 1: Triton's PyTorch backend for the CPU, built by the code `make setup` runs on the host,
# against the locked torch.
FROM ${BASE} AS native-backends
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-dev python3-pip cmake make g++ rapidjson-dev googletest \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /tmp/requirements.lock
COPY wheels/ /tmp/wheels/
RUN python3 -m pip install --no-cache-dir --break-system-packages -c /tmp/requirements.lock /tmp/wheels/torch-*.whl
COPY vendor/ /src/vendor/
COPY python/ /src/python/
RUN PYTHONPATH=/src/python python3 -m emotion_triton.serving.native_backends \
        --sources /src/vendor/triton-r24.10 --cache /tmp/backend-cache --install-to /out

# Stage 2: the server at NVIDIA's paths. Symlinks into the wheel, not copies: the Python backend
# stub finds its bundled libraries relative to its real path.
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-pip libpython3.11 libexpat1 \
    && rm -rf /var/lib/apt/lists/*
COPY wheels/ /tmp/wheels/
COPY requirements.lock /tmp/requirements.lock
# torch's shared libraries only (libtorch_cpu, libc10, its libgomp): what the PyTorch backend links.
RUN python3 -m pip install --no-cache-dir --break-system-packages --no-deps --target /opt/pytriton \
        /tmp/wheels/nvidia_pytriton-*.whl \
    && python3 -c "import glob, zipfile; wheel = zipfile.ZipFile(glob.glob('/tmp/wheels/torch-*.whl')[0]); \
        wheel.extractall('/opt/torch', [n for n in wheel.namelist() if n.startswith('torch/lib/lib')])" \
    && python3 -m pip install --no-cache-dir --break-system-packages -c /tmp/requirements.lock numpy \
    && rm -rf /tmp/wheels /tmp/requirements.lock
# backends/pytorch/libtriton_pytorch.so.
COPY --from=native-backends /out/ /opt/tritonserver/backends/
RUN set -e; triton=/opt/pytriton/pytriton/tritonserver; \
    python="python$(python3 -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')"; \
    mkdir -p /opt/tritonserver/bin /opt/tritonserver/backends/python /opt/nvidia; \
    ln -s $triton/bin/tritonserver /opt/tritonserver/bin/tritonserver; \
    ln -s $triton/backends/python/libtriton_python.so $triton/backends/python/triton_python_backend_utils.py \
        /opt/tritonserver/backends/python/; \
    ln -s $triton/python_backend_stubs/${python#python}/triton_python_backend_stub /opt/tritonserver/backends/python/; \
    ln -s /opt/torch/torch/lib/*.so* /opt/tritonserver/backends/pytorch/; \
    ln -s $triton/caches /opt/tritonserver/caches; \
    ln -s /opt/pytriton/nvidia_pytriton.libs/libtritonserver-*.so /opt/tritonserver/backends/pytorch/libtritonserver.so; \
    printf '#!/bin/bash\n# Stand-in for NVIDIA entrypoint: runs the command.\nexec "$@"\n' > /opt/nvidia/nvidia_entrypoint.sh; \
    chmod 0755 /opt/nvidia/nvidia_entrypoint.sh; \
    useradd --uid 1000 --user-group --create-home --shell /bin/bash triton-server; \
    /opt/tritonserver/bin/tritonserver --help 2>&1 | grep -q -- --model-repository
# The backends find their libraries next to them (RUNPATH $ORIGIN, the links' folder).
ENV PATH=/opt/tritonserver/bin:${PATH}
WORKDIR /opt/tritonserver
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]
