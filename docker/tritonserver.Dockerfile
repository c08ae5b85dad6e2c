# The serving image: NVIDIA's Triton release, plus exactly what the Python-backend
# models of model_repository/ import (numpy, tokenizers, onnxruntime), pinned by requirements.lock.
# The model repository is not in the image: it is mounted at /models (read-only).
#
#   docker compose build tritonserver          (passes NGC_RELEASE from docker-compose.yml)
#   docker build -f docker/tritonserver.Dockerfile --build-arg NGC_RELEASE=25.10 -t emotion-triton/tritonserver:local .
#
# NGC_RELEASE has no default on purpose: its one pinned value is x-ngc-release in
# docker-compose.yml, shared with docker/build.Dockerfile (tests/deployment/test_compose.py checks both).
ARG NGC_RELEASE
FROM nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3

USER root
COPY requirements.lock /tmp/requirements.lock
# --no-deps: the models need tokenizers' Rust core only (Tokenizer.from_file), not the Hub client it
# declares, and onnxruntime's inference session only (the CPU classifier, configs/onnx.pbtxt), not
# the quantization and conversion tools its other dependencies serve. PIP_BREAK_SYSTEM_PACKAGES: the
# image's Python (3.12, Ubuntu 24.04) is marked externally managed; these wheels are all the Python
# backend stubs import besides the standard library.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 PIP_CONSTRAINT= python3 -m pip install --no-cache-dir --no-deps \
        -c /tmp/requirements.lock numpy tokenizers onnxruntime \
    && python3 -c "import numpy, tokenizers, onnxruntime; print('numpy', numpy.__version__, 'tokenizers', \
        tokenizers.__version__, 'onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
    && rm /tmp/requirements.lock

# The healthcheck and the canary it runs (the local server's too), and the one definition of the
# tritonserver flags: standard-library modules of emotion_triton, run by the image's python3.
COPY deploy/healthcheck.py /opt/emotion-triton/healthcheck.py
COPY src/emotion_triton/serving/canary.py /opt/emotion-triton/canary.py
COPY src/emotion_triton/serving/tritonserver_flags.py /opt/emotion-triton/tritonserver_flags.py
COPY docker/tritonserver-entrypoint.sh /opt/emotion-triton/entrypoint.sh
RUN chmod 0755 /opt/emotion-triton/healthcheck.py /opt/emotion-triton/tritonserver_flags.py \
        /opt/emotion-triton/entrypoint.sh

# The image's non-root user (uid 1000, gid 1000 in every Triton release).
USER triton-server
WORKDIR /opt/emotion-triton
EXPOSE 8000 8001 8002

# The entrypoint fills in the admin key and execs NVIDIA's entrypoint, which execs the command:
# tritonserver_flags.py execs tritonserver with the production flags (TritonServerFlags, the local
# server's too), so tritonserver is PID 1 and gets docker's / the kubelet's SIGTERM itself.
# docker-compose.yml and deploy/k8s/deployment.yaml run this command as it is; a host without a GPU
# sets EMOTION_TRITON_DEVICE=cpu (docker-compose.cpu.yml).
ENTRYPOINT ["/opt/emotion-triton/entrypoint.sh"]
CMD ["python3", "/opt/emotion-triton/tritonserver_flags.py", "--admin-key=@TRITON_ADMIN_KEY@"]
