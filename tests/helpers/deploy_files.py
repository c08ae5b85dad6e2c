"""The project's deployment files: the compose files, the Dockerfiles and their entrypoints, the
healthcheck and the modules the serving image copies, the Kubernetes manifests."""

from __future__ import annotations

from pathlib import Path

from emotion_triton.serving import canary, tritonserver_flags

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CPU_COMPOSE_FILE = ROOT / "docker-compose.cpu.yml"
SERVING_DOCKERFILE = ROOT / "docker" / "tritonserver.Dockerfile"
BUILD_DOCKERFILE = ROOT / "docker" / "build.Dockerfile"
SERVING_ENTRYPOINT = ROOT / "docker" / "tritonserver-entrypoint.sh"
BUILD_ENTRYPOINT = ROOT / "docker" / "build-entrypoint.sh"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
FLAGS_MODULE = Path(tritonserver_flags.__file__)
CANARY_MODULE = Path(canary.__file__)
K8S = ROOT / "deploy" / "k8s"
