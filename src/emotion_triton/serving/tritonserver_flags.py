#!/usr/bin/env python3
"""The tritonserver command line: the one definition of its flags, for every deployment.

- The serving image's command (docker/tritonserver.Dockerfile copies this file to
  /opt/emotion-triton/tritonserver_flags.py): `python3 tritonserver_flags.py --admin-key=KEY`
  execs tritonserver with the production flags, so tritonserver stays PID 1. docker-compose.yml
  and deploy/k8s/deployment.yaml use the image's command as it is; a host without a GPU sets
  EMOTION_TRITON_DEVICE=cpu (docker-compose.cpu.yml), which selects the fastest CPU configuration of
  the classifier (--model-config-name=onnx: model.onnx on ONNX Runtime in a Python-backend model, as
  `make serve`; measured by `make bench`) and turns off the GPU metrics.
- The local server (emotion_triton.serving.local_server) builds its command line from the same
  object, with its own repository, classifier configuration, backend folder and loopback ports.

    python3 tritonserver_flags.py --admin-key KEY [--device gpu|cpu] [--print]

Standard library only: it runs with the python3 of the Triton image.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

RESTRICTED_APIS = "shared-memory,model-repository,logging,trace"
ADMIN_HEADER = "admin-key"
ADMIN_KEY_PLACEHOLDER = "@TRITON_ADMIN_KEY@"  # the image's entrypoint replaces it with the key
DEVICE_VARIABLE = "EMOTION_TRITON_DEVICE"
# --model-config-name per device of a container (emotion_triton.repository.variants derives configs/<name>.pbtxt:
# the ensemble's pin of the served version, the classifier's CPU variant): on a GPU the production
# config.pbtxt files; on a host without one, the classifier's fastest CPU variant, `make serve`'s.
DEVICE_CONFIGS: dict[str, str] = {"gpu": "gpu", "cpu": "onnx"}
CONTAINER_REPOSITORY = "/models"


@dataclass(frozen=True)
class TritonServerFlags:
    """Model control mode `explicit` (no repository polling; roll-outs load versions through the
    model-control API, behind the admin key), strict readiness, the exit timeout, the restricted APIs
    behind the `admin-key` header, and where each deployment differs."""

    model_repository: str = CONTAINER_REPOSITORY
    model_config_name: str | None = None  # None: each model's config.pbtxt
    admin_key: str = ADMIN_KEY_PLACEHOLDER
    exit_timeout: int = 30  # seconds tritonserver gives requests in flight on shutdown
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str | None = None  # None: every interface (a container); the local server binds loopback
    allow_gpu_metrics: bool = True
    backend_directory: str | None = None  # None: the image's own backends
    # Only `load_model` at start ("*": every model of the repository, the containers'; the local server
    # names its ensemble, which loads its steps), the rest by the load API.
    model_control_mode: str = "explicit"
    load_model: str = "*"
    # Bytes of Triton's response cache (the `local` cache in the server's caches/ folder); 0: none. Used by
    # the models whose config enables it: the classifier step (emotion_classifier's configs).
    response_cache_bytes: int = 0
    cache_directory: str | None = None  # None: the image's own caches/ (/opt/tritonserver/caches)
    extra: tuple[str, ...] = ()

    @classmethod
    def for_device(cls, device: str = "gpu", **changes) -> TritonServerFlags:
        """The serving image's flags on a host with (`gpu`) or without (`cpu`) a GPU."""
        if device not in DEVICE_CONFIGS:
            raise ValueError(f"unknown device {device!r}: choose {' or '.join(DEVICE_CONFIGS)}")
        return cls(model_config_name=DEVICE_CONFIGS[device], allow_gpu_metrics=device == "gpu", **changes)

    @property
    def restricted(self) -> str:
        return f"{RESTRICTED_APIS}:{ADMIN_HEADER}={self.admin_key}"

    def argv(self, tritonserver: str = "tritonserver") -> list[str]:
        args = [tritonserver, f"--model-repository={self.model_repository}"]
        if self.model_config_name:
            args.append(f"--model-config-name={self.model_config_name}")
        if self.backend_directory:
            args.append(f"--backend-directory={self.backend_directory}")
        args += [f"--model-control-mode={self.model_control_mode}", f"--load-model={self.load_model}"]
        args += [
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--http-restricted-api={self.restricted}",
            f"--grpc-restricted-protocol={self.restricted}",
        ]
        for endpoint, port in (("http", self.http_port), ("grpc", self.grpc_port), ("metrics", self.metrics_port)):
            if self.address:
                args.append(f"--{endpoint}-address={self.address}")
            args.append(f"--{endpoint}-port={port}")
        if self.response_cache_bytes > 0:
            args.append(f"--cache-config=local,size={self.response_cache_bytes}")
            if self.cache_directory:
                args.append(f"--cache-directory={self.cache_directory}")
        args += ["--allow-metrics=true", f"--allow-gpu-metrics={'true' if self.allow_gpu_metrics else 'false'}"]
        return args + list(self.extra)


def main(argv: list[str] | None = None) -> int:
    """The serving image's command: replaces this process with tritonserver (or prints its command line)."""
    parser = argparse.ArgumentParser(description="Exec tritonserver with the production flags.")
    parser.add_argument("--admin-key", required=True, help="the `admin-key` header value of the restricted APIs")
    parser.add_argument(
        "--device",
        choices=sorted(DEVICE_CONFIGS),
        default=os.environ.get(DEVICE_VARIABLE) or "gpu",
        help=f"gpu: the production configs; cpu: the classifier's configs/onnx.pbtxt "
        f"(default: ${DEVICE_VARIABLE} or gpu)",
    )
    parser.add_argument("--print", action="store_true", help="print the command line, one argument a line, and exit")
    args = parser.parse_args(argv)
    try:
        command = TritonServerFlags.for_device(args.device, admin_key=args.admin_key).argv()
    except ValueError as error:  # a bad $EMOTION_TRITON_DEVICE
        parser.error(str(error))
    if args.print:
        print("\n".join(command))
        return 0
    sys.stdout.flush()
    os.execvp(command[0], command)  # tritonserver takes this process (PID 1 in the container)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
