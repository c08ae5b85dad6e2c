#!/usr/bin/env bash
# Entry point of the serving image (docker/tritonserver.Dockerfile).
#
# Replaces @TRITON_ADMIN_KEY@ in the arguments with the key of the restricted APIs
# (shared memory, model repository, logging, trace), then execs NVIDIA's entrypoint,
# which execs the command (tritonserver_flags.py, which execs tritonserver): tritonserver
# ends up as PID 1 and handles SIGTERM itself.
#
# The key comes from TRITON_ADMIN_KEY, else from the file named by TRITON_ADMIN_KEY_FILE
# (a docker or Kubernetes secret), else it is random: the restricted APIs are then closed
# to everyone, and no roll-out can load a new version (the build service sends the same
# TRITON_ADMIN_KEY: docs/deploy.md).
set -euo pipefail

if [[ -z "${TRITON_ADMIN_KEY:-}" && -n "${TRITON_ADMIN_KEY_FILE:-}" && -s "${TRITON_ADMIN_KEY_FILE}" ]]; then
    TRITON_ADMIN_KEY="$(<"${TRITON_ADMIN_KEY_FILE}")"
fi
if [[ -z "${TRITON_ADMIN_KEY:-}" ]]; then
    TRITON_ADMIN_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
    echo "entrypoint: TRITON_ADMIN_KEY is not set: the restricted APIs get a random key" >&2
fi

args=()
for arg in "$@"; do
    # Quoted pattern and replacement: a key holding & or / is inserted as it is.
    args+=("${arg//"@TRITON_ADMIN_KEY@"/"${TRITON_ADMIN_KEY}"}")
done
unset TRITON_ADMIN_KEY TRITON_ADMIN_KEY_FILE

if [[ ${#args[@]} -eq 0 ]]; then
    echo "entrypoint: no command given (the image's CMD runs tritonserver_flags.py, which execs tritonserver)" >&2
    exit 2
fi
if [[ -x /opt/nvidia/nvidia_entrypoint.sh ]]; then
    exec /opt/nvidia/nvidia_entrypoint.sh "${args[@]}"
fi
exec "${args[@]}"
