#!/usr/bin/env bash
# The one-shot build step of docker-compose.yml (service `build`) and deploy/k8s/build-job.yaml.
#
# Installs a model into the repository only when it has none yet (no
# emotion_classifier/1/model.pt or emotion_tokenizer/1/tokenizer.json), so that
# `docker compose up tritonserver` works on a fresh clone and costs nothing after.
#
#   BUILD_MODE=export     (default) export the published fine-tuned checkpoint BUILD_CHECKPOINT
#   BUILD_CHECKPOINT_MOUNT  a fine-tuned checkpoint folder (docker-compose.yml mounts BUILD_CHECKPOINT_DIR
#                         there): exported instead, whatever BUILD_MODE says
#   BUILD_MODE=finetune   fine-tune with the model card's recipe (python build/build.py)
#   BUILD_ARGS            extra options for build/build.py, e.g. "--num_train_epochs 2"
#   MODEL_REPOSITORY      the repository to fill (default /workspace/model_repository)
#
# To rebuild, delete the two files (or the volume) and run it again.
set -euo pipefail

repository="${MODEL_REPOSITORY:-/workspace/model_repository}"
template="${MODEL_REPOSITORY_TEMPLATE:-/opt/emotion-triton/model_repository}"
mode="${BUILD_MODE:-export}"
checkpoint="${BUILD_CHECKPOINT:-bhadresh-savani/distilbert-base-uncased-emotion}"
python="${PYTHON:-python}"
model_file="emotion_classifier/1/model.pt"
tokenizer_file="emotion_tokenizer/1/tokenizer.json"

case "${mode}" in
    export | finetune) ;;
    *)
        echo "build: BUILD_MODE must be 'export' or 'finetune', not '${mode}'" >&2
        exit 2
        ;;
esac

mkdir -p "${repository}"
# An empty volume (Kubernetes) first gets the configurations shipped in the image.
if [[ ! -f "${repository}/emotion/config.pbtxt" ]]; then
    if [[ ! -d "${template}" ]]; then
        echo "build: ${repository} has no model configurations and there is no template at ${template}" >&2
        exit 2
    fi
    echo "build: copying the model configurations from ${template} into ${repository}"
    cp -R "${template}/." "${repository}/"
fi
# Git keeps no empty folder, and Triton needs a version folder for every model, the ensemble's included.
for config in "${repository}"/*/config.pbtxt; do
    mkdir -p "$(dirname "${config}")/1"
done

if [[ -s "${repository}/${model_file}" && -s "${repository}/${tokenizer_file}" ]]; then
    echo "build: ${repository} already has a model (${model_file}, ${tokenizer_file}): nothing to do"
    exit 0
fi

cd "$(dirname "$0")/.."
if [[ -n "${BUILD_CHECKPOINT_MOUNT:-}" ]]; then
    if [[ ! -f "${BUILD_CHECKPOINT_MOUNT}/config.json" ]]; then
        echo "build: ${BUILD_CHECKPOINT_MOUNT} (BUILD_CHECKPOINT_DIR) holds no fine-tuned checkpoint: config.json is missing" >&2
        exit 2
    fi
    echo "build: exporting the checkpoint in ${BUILD_CHECKPOINT_MOUNT} (BUILD_CHECKPOINT_DIR) into ${repository}"
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of options
    exec "${python}" build/build.py --finetuned "${BUILD_CHECKPOINT_MOUNT}" --repository "${repository}" ${BUILD_ARGS:-}
fi
if [[ "${mode}" == export ]]; then
    echo "build: exporting ${checkpoint} into ${repository}"
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of options
    exec "${python}" build/build.py --finetuned "${checkpoint}" --repository "${repository}" ${BUILD_ARGS:-}
fi
echo "build: fine-tuning with the model card's recipe into ${repository}"
# shellcheck disable=SC2086
exec "${python}" build/build.py --repository "${repository}" ${BUILD_ARGS:-}
