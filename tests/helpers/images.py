"""What the project's images run: the tritonserver command line of a device, the model configs it
loads and the worst case of a canary on a saturated server, the healthcheck as the image runs it, the
serving entrypoint, and the compose services and Kubernetes containers that run the same image."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import re
import subprocess
from pathlib import Path

from emotion_triton.repository import DEFAULT_REPOSITORY, VARIANTS, Ensemble
from emotion_triton.serving.tritonserver_flags import DEVICE_VARIABLE, TritonServerFlags
from tests.helpers.deploy_files import BUILD_DOCKERFILE, HEALTHCHECK, SERVING_DOCKERFILE, SERVING_ENTRYPOINT
from tests.helpers.dockerfiles import container_copy, dockerfile_env

ADMIN_PLACEHOLDER = "@TRITON_ADMIN_KEY@"


# What a canary may take in one ensemble step beyond the step's queue timeout (its config's
# default_queue_policy): a request that times out is refused when the batcher next forms a batch,
# that is once an instance is free, so one execution ahead of it (or its own), plus the batcher's
# poll (up to 0.5 s in Triton 2.51). 1 s covers a GPU batch and a Python step; a classifier on CPU
# instances needs one full batch on one core: 64 texts of 128 tokens through DistilBERT-base, about
# 0.7 TFLOP at 45-50 GFLOPS (docs/performance.md: ~50 texts/s on 2 cores at 22 tokens).
STEP_SLACK_SECONDS = 1.0
CPU_CLASSIFIER_EXECUTION_SECONDS = 16.0
PYTHON_START_SECONDS = 1.0  # python3's start before healthcheck.py's deadline starts


def loaded_config(repository: Path, model: str, config_name: str | None):
    """The configuration tritonserver loads for a model with --model-config-name=<name> (the classifier's
    variants derived from its config.pbtxt)."""
    return Ensemble.read(repository).config(model, config_name)


def classifier_config_names(repository: Path = DEFAULT_REPOSITORY) -> list[str]:
    """The --model-config-name values the classifier has a derived config for (configs/<name>.pbtxt)."""
    return sorted(variant.config_name for variant in VARIANTS.values() if variant.derive is not None)


def canary_worst_case(repository: Path = DEFAULT_REPOSITORY, config_name: str | None = None) -> float:
    """The longest one canary can take on a saturated server, in seconds: per ensemble step, its queue
    timeout plus what a request can wait beyond it (STEP_SLACK_SECONDS, CPU_CLASSIFIER_EXECUTION_SECONDS)."""
    ensemble = Ensemble.read(repository)
    total = 0.0
    for model in (ensemble.tokenizer, ensemble.classifier, ensemble.postprocess):
        config = loaded_config(repository, model, config_name)
        policy = config.dynamic_batching.default_queue_policy
        bounded = (
            config.HasField("dynamic_batching")
            and config.dynamic_batching.HasField("default_queue_policy")
            and policy.timeout_action == policy.REJECT
            and policy.default_timeout_microseconds > 0
        )
        assert bounded, f"{model}: no queue timeout that refuses (REJECT): a canary could wait without bound"
        on_gpu = any(group.kind == group.KIND_GPU for group in config.instance_group)
        slack = CPU_CLASSIFIER_EXECUTION_SECONDS if model == ensemble.classifier and not on_gpu else STEP_SLACK_SECONDS
        total += policy.default_timeout_microseconds / 1e6 + slack
    return total


def size_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([kmg]?)b?", str(size).lower()).groups()
    return int(number) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def flags(command: list[str]) -> dict[str, str]:
    """`--name=value` arguments as a dict (each flag once)."""
    result = {}
    for arg in command:
        name, _, value = arg.partition("=")
        assert name.startswith("--"), f"unexpected argument {arg!r}"
        assert name not in result, f"{name} given twice"
        result[name] = value
    return result


def device(environment) -> str:
    """The EMOTION_TRITON_DEVICE a compose service (a mapping) or a Kubernetes container (a list) sets."""
    if isinstance(environment, list):
        environment = {variable["name"]: variable.get("value") for variable in environment}
    return (environment or {}).get(DEVICE_VARIABLE) or "gpu"


def container_command(environment=None, key: str = ADMIN_PLACEHOLDER) -> list[str]:
    """The tritonserver command line the image's command execs in a container with `environment`."""
    return TritonServerFlags.for_device(device(environment), admin_key=key).argv()


def container_healthcheck_path() -> str:
    return container_copy("deploy/healthcheck.py")


def run_serving_entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SERVING_ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=30,
    )


def load_healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def healthcheck_argv(command: list[str]) -> list[str]:
    """The healthcheck's own arguments in a probe's command line."""
    assert command[:2] == ["python3", container_healthcheck_path()], command
    return command[2:]


# compose service -> the Kubernetes manifest, kind and container that run the same image.
SHARED_CONTAINERS = {
    "tritonserver": ("deploy/k8s/deployment.yaml", "Deployment", "tritonserver", SERVING_DOCKERFILE),
    "build": ("deploy/k8s/build-job.yaml", "Job", "build", BUILD_DOCKERFILE),
}


def image_repository(service: str) -> str:
    """Where the image's program finds the model repository: the image command's --model-repository (the
    server), the build image's MODEL_REPOSITORY."""
    if service == "tritonserver":
        return flags(container_command()[1:])["--model-repository"]
    return dockerfile_env(SHARED_CONTAINERS[service][3])["MODEL_REPOSITORY"]
