#!/usr/bin/env bash
# The one-shot build step of docker-compose.yml (service `build`) and deploy/k8s/build-job.yaml.
#
# Installs a model into the repository only when it has none yet (no version of
# emotion_classifier with model.pt, or of emotion_tokenizer with tokenizer.json), so that
# `docker compose up tritonserver` works on a fresh clone and costs nothing after.
#
#   BUILD_MODE=export     (default) export the published fine-tuned checkpoint BUILD_CHECKPOINT
#   BUILD_CHECKPOINT_MOUNT  a fine-tuned checkpoint folder (docker-compose.yml mounts BUILD_CHECKPOINT_DIR
#                         there): exported instead, whatever BUILD_MODE says
#   BUILD_MODE=finetune   fine-tune with the model card's recipe (python build/build.py)
#   BUILD_MODE=rollout    check and serve the newest version above the served one (on $EMOTION_TRITON_SERVER)
#   BUILD_MODE=rollback   serve the version before the served one again
#   BUILD_NEW_VERSION=1   build even when the repository has a model: a new version beside the served
#                         one, rolled out (checked, then served) when $EMOTION_TRITON_SERVER answers
#   BUILD_DATA_MOUNT      labelled data the build evaluates on (docker-compose.yml mounts BUILD_DATA_DIR there)
#   BUILD_ARGS            extra options for build/build.py, e.g. "--num_train_epochs 2"
#   MODEL_REPOSITORY      the repository to fill (default /workspace/model_repository)
set -euo pipefail

repository="${MODEL_REPOSITORY:-/workspace/model_repository}"
template="${MODEL_REPOSITORY_TEMPLATE:-/opt/emotion-triton/model_repository}"
mode="${BUILD_MODE:-export}"
checkpoint="${BUILD_CHECKPOINT:-bhadresh-savani/distilbert-base-uncased-emotion}"
python="${PYTHON:-python}"

case "${mode}" in
    export | finetune | rollout | rollback) ;;
    *)
        echo "build: BUILD_MODE must be 'export', 'finetune', 'rollout' or 'rollback', not '${mode}'" >&2
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

cd "$(dirname "$0")/.."
# The classifier's CPU variants and the served version's pins, derived from the tracked configs and the
# repository's state (emotion_triton.repository.variants): tritonserver loads them by --model-config-name.
"${python}" -m emotion_triton.repository --repository "${repository}"
if [[ "${mode}" == rollout ]]; then
    exec "${python}" -m emotion_triton.commands.rollout --repository "${repository}"
fi
if [[ "${mode}" == rollback ]]; then
    exec "${python}" -m emotion_triton.commands.rollout --rollback --repository "${repository}"
fi
# Any version counts: a roll-out may have removed version 1's files.
if [[ -z "${BUILD_NEW_VERSION:-}" ]] \
    && compgen -G "${repository}/emotion_classifier/*/model.pt" > /dev/null \
    && compgen -G "${repository}/emotion_tokenizer/*/tokenizer.json" > /dev/null; then
    echo "build: ${repository} already has a model: nothing to do (BUILD_NEW_VERSION=1 builds a new version)"
    exit 0
fi

data_args=()
if [[ -n "${BUILD_DATA_MOUNT:-}" ]]; then
    data_args=(--data "${BUILD_DATA_MOUNT}")
fi
if [[ -n "${BUILD_CHECKPOINT_MOUNT:-}" ]]; then
    if [[ ! -f "${BUILD_CHECKPOINT_MOUNT}/config.json" ]]; then
        echo "build: ${BUILD_CHECKPOINT_MOUNT} (BUILD_CHECKPOINT_DIR) holds no fine-tuned checkpoint: config.json is missing" >&2
        exit 2
    fi
    echo "build: exporting the checkpoint in ${BUILD_CHECKPOINT_MOUNT} (BUILD_CHECKPOINT_DIR) into ${repository}"
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of options
    exec "${python}" build/build.py --finetuned "${BUILD_CHECKPOINT_MOUNT}" --repository "${repository}" "${data_args[@]}" ${BUILD_ARGS:-}
fi
if [[ "${mode}" == export ]]; then
    echo "build: exporting ${checkpoint} into ${repository}"
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of options
    exec "${python}" build/build.py --finetuned "${checkpoint}" --repository "${repository}" "${data_args[@]}" ${BUILD_ARGS:-}
fi
echo "build: fine-tuning with the model card's recipe into ${repository}"
# shellcheck disable=SC2086
exec "${python}" build/build.py --repository "${repository}" "${data_args[@]}" ${BUILD_ARGS:-}
