# The build image: fine-tunes (BUILD_MODE=finetune) or exports the published checkpoint
# (BUILD_MODE=export) into the model repository, once, when it has no model yet
# (docker/build-entrypoint.sh). docker-compose.yml runs it as the one-shot `build` service,
# deploy/k8s/build-job.yaml as a Job.
#
# FROM NVIDIA's PyTorch container of the same release as the Triton image: the Triton
# PyTorch backend of release yy.mm is built on the libtorch of PyTorch container yy.mm,
# so the TorchScript file is written by the torch that serves it. NGC_RELEASE has no
# default: its one pinned value is x-ngc-release in docker-compose.yml.
ARG NGC_RELEASE
FROM nvcr.io/nvidia/pytorch:${NGC_RELEASE}-py3

WORKDIR /workspace
COPY requirements.lock /tmp/requirements.lock
# Everything but torch at the versions of requirements.lock: torch (and its CUDA libraries)
# stay those of the base image. The NGC image's own pip constraints (PIP_CONSTRAINT) are
# replaced by the lock's so that the build runs on the versions the tests run on.
RUN grep -v -E '^(torch|nvidia-[a-z0-9-]+|cuda-[a-z-]+|triton)==' /tmp/requirements.lock > /tmp/constraints.txt \
    && PIP_CONSTRAINT= python -m pip install --no-cache-dir -c /tmp/constraints.txt \
        transformers accelerate tokenizers datasets huggingface_hub safetensors scikit-learn matplotlib tqdm numpy \
        protobuf psutil "tritonclient[grpc,http]" tyro onnx onnxruntime \
    && python -c "import torch, transformers, accelerate, datasets, sklearn, tritonclient.grpc; print('torch', torch.__version__)" \
    && rm /tmp/requirements.lock /tmp/constraints.txt

# The build code, and the repository's configurations as a template for an empty volume
# (Kubernetes); docker compose mounts ./model_repository over /workspace/model_repository.
COPY pyproject.toml ./
COPY src ./src
COPY build ./build
COPY docker/build-entrypoint.sh ./docker/build-entrypoint.sh
COPY model_repository /opt/emotion-triton/model_repository
# runs/ (checkpoints) and the Hugging Face cache are volumes; writable by any uid (BUILD_USER).
RUN mkdir -p /workspace/runs /workspace/model_repository /cache/huggingface \
    && chmod 1777 /workspace/runs /workspace/model_repository /cache /cache/huggingface

ENV PYTHONPATH=/workspace/src \
    HF_HOME=/cache/huggingface \
    MODEL_REPOSITORY=/workspace/model_repository \
    MODEL_REPOSITORY_TEMPLATE=/opt/emotion-triton/model_repository \
    BUILD_MODE=export

# NVIDIA's entrypoint (kept) execs this command.
CMD ["bash", "/workspace/docker/build-entrypoint.sh"]
