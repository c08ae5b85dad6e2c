"""Deployment files, checked without a Docker engine, a GPU or a cluster.

docker-compose.yml against the compose specification's JSON schema, the Kubernetes
manifests against the Kubernetes schemas (both offline, with real validators), and
everything that must agree across them: the NGC release, the tritonserver flags (those
of the local server), ports (those of the client), paths, images, labels and metric
names; the containers compose and Kubernetes both run, in one table of their facts (image,
command, user, privileges, mounts, environment, healthcheck) from the real Compose v2's
merged model. The entrypoint scripts and the healthcheck run for real, against a fake Triton; what cannot
run here (a cluster, a GPU, Prometheus) is checked by arithmetic on the files: probe timeouts
against the queue timeouts of the model configs, the autoscaling window against the scrape
interval, the rollout against a one-GPU cluster. tests/test_deploy_healthcheck.py runs the
healthcheck against a real saturated tritonserver.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dockerfile
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import tomllib
import yaml

from emotion_triton.client import DEFAULT_URLS
from emotion_triton.commands import serve
from emotion_triton.containers.engine import compose_binary
from emotion_triton.containers.stand_ins import STAND_IN_DIR
from emotion_triton.repository import CLASSIFIER_CONFIGS, CLASSIFIER_FILES, DEFAULT_REPOSITORY, Ensemble, parse_config
from emotion_triton.serving import canary, tritonserver_flags
from emotion_triton.serving import local_server as server
from emotion_triton.serving.local_server import DEFAULT_CLASSIFIER
from emotion_triton.serving.preflight import free_port
from emotion_triton.serving.tritonserver_flags import DEVICE_VARIABLE, TritonServerFlags

ROOT = Path(__file__).resolve().parents[1]
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
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # oldest supported upstream release to the newest schemas
ADMIN_PLACEHOLDER = "@TRITON_ADMIN_KEY@"
MINIMUM_RELEASE = (25, 10)  # older releases are affected by the 2025 security bulletins
ALLOWED_MODEL_IMPORTS = {"numpy", "torch", "tokenizers", "onnxruntime", "triton_python_backend_utils"}
# Flags only the local server has (CPU configs, the wheel's backends, loopback).
LOCAL_ONLY = {
    "--model-config-name",
    "--backend-directory",
    "--http-address",
    "--grpc-address",
    "--metrics-address",
}
# The models loaded at start: the local server's ensemble (a user's repository may hold others), every
# model of the containers' repository.
PER_DEPLOYMENT = {
    "--model-repository",
    "--http-port",
    "--grpc-port",
    "--metrics-port",
    "--allow-gpu-metrics",
    "--load-model",
}
# What a canary may take in one ensemble step beyond the step's queue timeout (its config's
# default_queue_policy): a request that times out is refused when the batcher next forms a batch,
# that is once an instance is free, so one execution ahead of it (or its own), plus the batcher's
# poll (up to 0.5 s in Triton 2.51). 1 s covers a GPU batch and a Python step; a classifier on CPU
# instances needs one full batch on one core: 64 texts of 128 tokens through DistilBERT-base, about
# 0.7 TFLOP at 45-50 GFLOPS (docs/performance.md: ~50 texts/s on 2 cores at 22 tokens).
STEP_SLACK_SECONDS = 1.0
CPU_CLASSIFIER_EXECUTION_SECONDS = 16.0
PYTHON_START_SECONDS = 1.0  # python3's start before healthcheck.py's deadline starts
# The floor of each NVIDIA release, from its Triton release notes ("Driver Requirements", "GPU
# Requirements"): CUDA version, driver branch, compute capability.
GPU_FLOOR = {"25.10": ("CUDA 13.0", "R575", "7.5")}
# The prometheus-community/prometheus chart scrapes annotated pods at server.global.scrape_interval,
# 1m unless changed (its values.yaml); podmonitor.yaml sets its own interval.
PROMETHEUS_CHART_SCRAPE_INTERVAL = "1m"


# -- helpers -------------------------------------------------------------------------------------


def interpolate(value):
    """docker compose's ${VAR:-default} / ${VAR} with no variable set, recursively."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def seconds(duration: str) -> float:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a compose duration: {duration!r}"
    hours, minutes, secs = (int(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + secs


class Reset:
    """compose's `!reset` tag: removes the attribute from the merged model."""


class Override:
    """compose's `!override` tag: replaces the attribute instead of merging it."""

    def __init__(self, value):
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    """YAML with compose's merge tags."""


def _construct_tag(cls):
    def construct(loader, node):
        if isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return Reset() if cls is Reset else Override(value)

    return construct


ComposeLoader.add_constructor("!reset", _construct_tag(Reset))
ComposeLoader.add_constructor("!override", _construct_tag(Override))


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # SafeLoader plus two tags


def _untagged(value):
    if isinstance(value, Override):
        return _untagged(value.value)
    if isinstance(value, dict):
        return {k: _untagged(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [_untagged(v) for v in value if not isinstance(v, Reset)]
    return value


def merge_compose(base, override, path: tuple = ()):
    """`docker compose -f base -f override`, by the compose specification's merge rules: mappings
    merge, sequences append (unique entries), command / entrypoint / healthcheck.test are replaced,
    `!reset` removes and `!override` replaces."""
    if isinstance(override, Override):
        return _untagged(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            elif key in base:
                merged[key] = merge_compose(base[key], value, (*path, key))
            else:
                merged[key] = _untagged(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        replaced = path[-1:] in (("command",), ("entrypoint",)) or path[-2:] == ("healthcheck", "test")
        if replaced:
            return _untagged(override)
        return base + [v for v in _untagged(override) if v not in base]
    return _untagged(override)


def gpu_requests(value, where: str = "") -> list[str]:
    """Every place of a compose model that asks for a GPU."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}/{key}"
            if key == "gpus" or (key == "runtime" and item == "nvidia"):
                found.append(here)
            elif key == "devices" and isinstance(item, list):
                found += [
                    here
                    for d in item
                    if isinstance(d, dict) and ("gpu" in d.get("capabilities", []) or d.get("driver") == "nvidia")
                ]
            else:
                found += gpu_requests(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += gpu_requests(item, f"{where}/{index}")
    return found


def loaded_config(repository: Path, model: str, config_name: str | None):
    """The configuration tritonserver loads for a model: configs/<name>.pbtxt with
    --model-config-name=<name> when that file exists, else config.pbtxt."""
    custom = repository / model / "configs" / f"{config_name}.pbtxt"
    return parse_config(custom if config_name and custom.is_file() else repository / model / "config.pbtxt")


def classifier_config_names(repository: Path = DEFAULT_REPOSITORY) -> list[str]:
    """The --model-config-name values the classifier has a file for (configs/<name>.pbtxt)."""
    ensemble = Ensemble.read(repository)
    return sorted(path.stem for path in (repository / ensemble.classifier / "configs").glob("*.pbtxt"))


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


def dockerfile_instructions(path: Path) -> list[tuple[str, tuple[str, ...], bool]]:
    return [(c.cmd.upper(), c.value, c.json) for c in dockerfile.parse_file(str(path))]


def dockerfile_value(path: Path, instruction: str) -> tuple[str, ...]:
    values = [value for cmd, value, _ in dockerfile_instructions(path) if cmd == instruction]
    assert values, f"{path.name} has no {instruction}"
    return values[-1]


def dockerfile_env(path: Path) -> dict[str, str]:
    env = {}
    for cmd, value, _ in dockerfile_instructions(path):
        if cmd == "ENV":
            env.update(zip(value[::2], value[1::2], strict=True))
    return env


def pip_packages(path: Path) -> set[str]:
    """Requirement names of the `pip install` commands of a Dockerfile's RUN instructions."""
    names = set()
    for cmd, value, _ in dockerfile_instructions(path):
        if cmd != "RUN":
            continue
        for segment in " ".join(value).split("&&"):
            words = shlex.split(segment)
            if "install" not in words or "pip" not in words:
                continue
            words = words[words.index("install") + 1 :]
            skip = False
            for word in words:
                if skip:
                    skip = False
                elif word in ("-c", "-r", "--constraint", "--requirement"):
                    skip = True
                elif not word.startswith("-"):
                    names.add(canonical(re.split(r"[\[=<>]", word)[0]))
    return names


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[canonical(name.strip())] = version.strip()
    return pins


def third_party_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("__future__", "emotion_triton")}


def k8s_documents() -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S / resource).read_text()):
            if document:
                documents.append((resource, document))
    return documents


def k8s_object(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in k8s_documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def serving(compose) -> dict:
    return interpolate(compose["services"]["tritonserver"])


@pytest.fixture(scope="module")
def deployment() -> dict:
    return k8s_object("Deployment", "emotion-triton")


@pytest.fixture(scope="module")
def triton_container(deployment) -> dict:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "tritonserver"]
    return container


def container_copy(source: str) -> str:
    """Where the serving image has a file of this repository (its COPY destination)."""
    copies = [value for cmd, value, _ in dockerfile_instructions(SERVING_DOCKERFILE) if cmd == "COPY"]
    (destination,) = [dest for src, dest in copies if src == source]
    return destination


def device(environment) -> str:
    """The EMOTION_TRITON_DEVICE a compose service (a mapping) or a Kubernetes container (a list) sets."""
    if isinstance(environment, list):
        environment = {variable["name"]: variable.get("value") for variable in environment}
    return (environment or {}).get(DEVICE_VARIABLE) or "gpu"


def container_command(environment=None, key: str = ADMIN_PLACEHOLDER) -> list[str]:
    """The tritonserver command line the image's command execs in a container with `environment`."""
    return TritonServerFlags.for_device(device(environment), admin_key=key).argv()


def container_commands(compose, cpu_compose, triton_container) -> dict[str, list[str]]:
    return {
        "docker-compose.yml": container_command(compose["services"]["tritonserver"].get("environment")),
        "docker-compose.cpu.yml": container_command(cpu_compose["services"]["tritonserver"].get("environment")),
        "deploy/k8s/deployment.yaml": container_command(triton_container.get("env")),
    }


# -- compose: schema, release, GPU, mounts, ports ------------------------------------------------


def compose_schema() -> dict:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def test_compose_file_follows_the_compose_specification(compose):
    validator = jsonschema.Draft202012Validator(compose_schema())
    for label, document in (("as written", compose), ("interpolated", interpolate(compose))):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, f"docker-compose.yml ({label}) breaks the compose specification: {errors}"
    # The schema is strict: a misspelt key is an error, not ignored.
    typo = {"services": {"tritonserver": {"image": "x", "shm_sise": "1gb"}}}
    assert list(validator.iter_errors(typo))


def test_ngc_release_is_pinned_once_and_recent_enough(compose):
    release = compose["x-ngc-release"]
    assert re.fullmatch(r"\d\d\.\d\d", release), f"x-ngc-release must be a yy.mm release, not {release!r}"
    assert tuple(map(int, release.split("."))) >= MINIMUM_RELEASE, f"{release} predates the 2025 security fixes"
    for service, dockerfile_path, base in (
        ("tritonserver", SERVING_DOCKERFILE, "nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3"),
        ("build", BUILD_DOCKERFILE, "nvcr.io/nvidia/pytorch:${NGC_RELEASE}-py3"),
    ):
        build = compose["services"][service]["build"]
        assert build["args"]["NGC_RELEASE"] == release
        assert build["dockerfile"] == str(dockerfile_path.relative_to(ROOT)) and build["context"] == "."
        instructions = dockerfile_instructions(dockerfile_path)
        assert instructions[0][:2] == ("ARG", ("NGC_RELEASE",)), "NGC_RELEASE must be an ARG without a default"
        assert [value for cmd, value, _ in instructions if cmd == "FROM"] == [(base,)]
    # No other file pins a release of its own.
    for path in [*(ROOT / "docker").rglob("*"), *(ROOT / "deploy").rglob("*")]:
        if path.is_file():
            assert not re.search(r"nvcr\.io/nvidia/[\w-]+:\d", path.read_text()), f"{path} pins an NGC release"


def test_other_images_are_pinned(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service:
            assert image.startswith("emotion-triton/"), f"{name}: a built image is named emotion-triton/..."
            continue
        tag = image.rpartition(":")[2]
        assert ":" in image and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{name}: pin {image}"


def test_gpu_is_reserved_for_the_server_and_the_build(compose):
    for name in ("tritonserver", "build"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] and d.get("driver") == "nvidia" for d in devices), name


@pytest.fixture(scope="module")
def cpu_compose(compose) -> dict:
    """docker compose -f docker-compose.yml -f docker-compose.cpu.yml, merged."""
    return merge_compose(compose, load_compose(CPU_COMPOSE_FILE))


def test_cpu_override_merges_into_a_compose_file_that_follows_the_specification(cpu_compose):
    validator = jsonschema.Draft202012Validator(compose_schema())
    for label, document in (("as written", cpu_compose), ("interpolated", interpolate(cpu_compose))):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, f"docker-compose.yml + docker-compose.cpu.yml ({label}) break the specification: {errors}"
    # The merge follows compose's rules: the tags are understood, shell commands are replaced.
    override = load_compose(CPU_COMPOSE_FILE)
    assert isinstance(override["services"]["build"]["deploy"]["resources"]["reservations"]["devices"], Reset)
    assert merge_compose({"c": ["a", "b"], "p": ["1"]}, {"c": ["x"], "p": ["2"]}, ("s",)) == {
        "c": ["a", "b", "x"],
        "p": ["1", "2"],
    }
    assert merge_compose({"command": ["a", "b"]}, {"command": ["x"]})["command"] == ["x"]


def test_cpu_override_drops_every_gpu_reservation(compose, cpu_compose):
    assert gpu_requests(compose["services"]["tritonserver"]) and gpu_requests(compose["services"]["build"])
    assert gpu_requests(cpu_compose["services"]) == [], "the CPU deployment must start on a host without a GPU"
    assert set(cpu_compose["services"]) == set(compose["services"]), "the same services"


def test_cpu_override_keeps_everything_but_the_gpu_and_the_model_config(compose, cpu_compose):
    """Same image, repository, hardening, ports, ulimits, shm and healthcheck script; the flags of the
    GPU service (the image's command) with EMOTION_TRITON_DEVICE=cpu: --model-config-name of a CPU config."""
    changed = {"environment", "deploy", "healthcheck"}
    for name in ("tritonserver", "build"):
        gpu, cpu = compose["services"][name], cpu_compose["services"][name]
        assert {k: v for k, v in cpu.items() if k not in changed} == {k: v for k, v in gpu.items() if k not in changed}
    gpu, cpu = compose["services"]["tritonserver"], cpu_compose["services"]["tritonserver"]
    assert cpu["build"] == gpu["build"] and cpu["image"] == gpu["image"]
    assert cpu["security_opt"] == ["no-new-privileges:true"] and cpu["cap_drop"] == ["ALL"] and cpu["init"] is False
    assert {k: v for k, v in cpu["healthcheck"].items() if k not in ("test", "timeout")} == {
        k: v for k, v in gpu["healthcheck"].items() if k not in ("test", "timeout")
    }

    assert cpu["environment"] == {**gpu["environment"], DEVICE_VARIABLE: "cpu"}
    gpu_flags, cpu_flags = (
        flags(container_command(gpu["environment"])[1:]),
        flags(container_command(cpu["environment"])[1:]),
    )
    config_name = cpu_flags.pop("--model-config-name")
    assert cpu_flags.pop("--allow-gpu-metrics") == "false" and gpu_flags.pop("--allow-gpu-metrics") == "true"
    assert cpu_flags == gpu_flags, "every other flag is the GPU service's"
    assert config_name == CLASSIFIER_CONFIGS[DEFAULT_CLASSIFIER], "the container serves what `make serve` serves"
    # A roll-out by the build service loads the file of the classifier variant the server runs.
    gpu_variant = compose["services"]["build"]["environment"]["EMOTION_TRITON_CLASSIFIER"]
    cpu_variant = cpu_compose["services"]["build"]["environment"]["EMOTION_TRITON_CLASSIFIER"]
    production = parse_config(DEFAULT_REPOSITORY / "emotion_classifier" / "config.pbtxt")
    assert (production.platform, CLASSIFIER_FILES[gpu_variant]) == ("pytorch_libtorch", "model.pt")
    assert CLASSIFIER_CONFIGS[cpu_variant] == config_name

    # The name selects a CPU configuration of the classifier; every model it loads runs on CPU instances only.
    ensemble = Ensemble.read(DEFAULT_REPOSITORY)
    assert config_name in classifier_config_names(), f"no {ensemble.classifier}/configs/{config_name}.pbtxt"
    classifier = loaded_config(DEFAULT_REPOSITORY, ensemble.classifier, config_name)
    for model in (ensemble.tokenizer, ensemble.classifier, ensemble.postprocess):
        kinds = {group.kind for group in loaded_config(DEFAULT_REPOSITORY, model, config_name).instance_group}
        assert kinds == {classifier.instance_group[0].KIND_CPU}, f"{model} would ask for a GPU"


def test_every_mounted_path_exists_and_the_build_fills_the_servers_repository(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source, _, rest = interpolate(volume).partition(":")
                volume = {"type": "bind" if source.startswith((".", "/")) else "volume", "source": source}
            if volume["type"] == "bind":
                assert (ROOT / volume["source"]).exists(), f"{name} mounts {volume['source']}, which is not in the repo"
            else:
                assert volume["source"] in compose["volumes"], f"{name}: undeclared volume {volume['source']}"

    # The same folder at the path each image uses (its access: test_compose_and_kubernetes_run_the_same_containers).
    for name in ("tritonserver", "build"):
        volumes = [v for v in compose["services"][name]["volumes"] if isinstance(v, dict)]  # long syntax
        sources = [v["source"] for v in volumes if v["target"] == image_repository(name)]
        assert sources == ["./model_repository"], f"{name}: {image_repository(name)} is not ./model_repository"


def test_ports_match_the_client_defaults(compose, cpu_compose, serving, triton_container):
    expected = {
        "http": int(DEFAULT_URLS["http"].rsplit(":", 1)[1]),
        "grpc": int(DEFAULT_URLS["grpc"].rsplit(":", 1)[1]),
        "metrics": server.ServerOptions().metrics_port,
    }
    assert expected == {"http": 8000, "grpc": 8001, "metrics": 8002}
    published = {}
    for mapping in serving["ports"]:
        host, container = mapping.rsplit(":", 1)
        published[int(container)] = int(host.rsplit(":", 1)[-1])
    assert published == {port: port for port in expected.values()}, "ports published as the client expects them"
    for where, command in container_commands(compose, cpu_compose, triton_container).items():
        given = flags(command[1:])
        for name, port in expected.items():
            assert given[f"--{name}-port"] == str(port), f"{where}: --{name}-port"
    assert {int(p) for p in dockerfile_value(SERVING_DOCKERFILE, "EXPOSE")} == set(expected.values())
    assert {p["name"]: p["containerPort"] for p in triton_container["ports"]} == expected
    service = k8s_object("Service", "emotion-triton")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == expected
    prometheus = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"tritonserver:{expected['metrics']}"]


# -- the tritonserver command line ---------------------------------------------------------------


def test_the_image_command_is_the_one_definition_of_the_flags(compose, cpu_compose, triton_container):
    """The serving image's CMD runs serving/tritonserver_flags.py (copied into the image), which execs
    tritonserver; compose and Kubernetes use that command as it is, with no copy of its flags."""
    module = container_copy(str(FLAGS_MODULE.relative_to(ROOT)))
    assert list(dockerfile_value(SERVING_DOCKERFILE, "CMD")) == ["python3", module, f"--admin-key={ADMIN_PLACEHOLDER}"]
    # docker-compose.yml and the Deployment run it as it is, on the same variables: the table of
    # test_compose_and_kubernetes_run_the_same_containers.
    assert device(compose["services"]["tritonserver"]["environment"]) == "gpu"
    assert third_party_imports(FLAGS_MODULE) == set(), "standard library only: the image's python3 runs it"
    assert "--model-config-name" not in flags(container_command()[1:]), "the production (GPU) configs"


def run_image_command(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The image's command as the image runs it: the entrypoint, then tritonserver_flags.py from a folder of
    its own, by a python3 without site-packages (no emotion_triton, no third-party module), printing
    the command line it would exec."""
    image = tmp_path / "opt-emotion-triton"
    image.mkdir(exist_ok=True)
    shutil.copy(FLAGS_MODULE, image / "tritonserver_flags.py")
    python = [sys.executable, "-S", "-E"]
    return run_serving_entrypoint(*python, str(image / "tritonserver_flags.py"), *args, "--print", **env)


def test_the_image_command_execs_the_flags_of_its_device(tmp_path):
    key = "k&ey/with\\odd|chars"
    for environment in ({}, {DEVICE_VARIABLE: "gpu"}, {DEVICE_VARIABLE: "cpu"}):
        result = run_image_command(tmp_path, f"--admin-key={ADMIN_PLACEHOLDER}", TRITON_ADMIN_KEY=key, **environment)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == container_command(environment, key)
    wrong = run_image_command(tmp_path, "--admin-key=x", **{DEVICE_VARIABLE: "tpu"})
    assert wrong.returncode == 2 and "unknown device 'tpu'" in wrong.stderr
    assert "os.execvp(command[0], command)" in FLAGS_MODULE.read_text(), "exec: tritonserver stays PID 1"


def test_the_local_server_runs_the_containers_flags(monkeypatch, tmp_path):
    key, exit_timeout = "dummy-admin-key", server.ServerOptions().exit_timeout
    monkeypatch.setattr(server, "pytriton_dir", lambda: tmp_path / "pytriton")
    monkeypatch.setattr(server, "backend_directory", lambda cache, native: tmp_path / "backends")
    local_server = server.LocalServer(server.ServerOptions(admin_key=key, exit_timeout=exit_timeout))
    try:
        local_command = local_server.command()
        assert local_command == local_server.flags().argv(local_command[0]), "LocalServer.command() is its flags'"
    finally:
        shutil.rmtree(local_server._workdir, ignore_errors=True)
    local = flags(local_command[1:])
    container = flags(container_command(key=key)[1:])
    assert container["--allow-gpu-metrics"] == "true" and container["--allow-metrics"] == "true"
    assert local["--allow-gpu-metrics"] == "false"
    assert (local["--model-control-mode"], local["--load-model"]) == ("explicit", "emotion")
    assert (container["--model-control-mode"], container["--load-model"]) == ("explicit", "*")  # roll-outs

    def shared(given: dict[str, str], only: set[str]) -> dict[str, str]:
        return {k: v for k, v in given.items() if k not in only | PER_DEPLOYMENT}

    assert shared(container, set()) == shared(local, LOCAL_ONLY)
    assert container["--exit-timeout-secs"] == str(exit_timeout)
    restricted = f"{tritonserver_flags.RESTRICTED_APIS}:{tritonserver_flags.ADMIN_HEADER}={key}"
    assert container["--http-restricted-api"] == container["--grpc-restricted-protocol"] == restricted


def test_the_production_configs_are_the_gpu_ones():
    ensemble = Ensemble.read(DEFAULT_REPOSITORY)
    classifier = ensemble.config(ensemble.classifier)
    assert classifier.platform == "pytorch_libtorch"
    assert [group.kind for group in classifier.instance_group] == [classifier.instance_group[0].KIND_GPU]
    assert classifier.HasField("dynamic_batching")


def test_compose_server_settings(compose, serving):
    exit_timeout = int(flags(container_command(serving["environment"])[1:])["--exit-timeout-secs"])
    assert seconds(serving["stop_grace_period"]) > exit_timeout
    assert size_bytes(serving["shm_size"]) >= 256 << 20, "the Python backend needs shared memory"
    assert serving["init"] is False, "no init process: tritonserver is PID 1"
    assert serving["depends_on"] == {"build": {"condition": "service_completed_successfully"}}
    assert "TRITON_ADMIN_KEY" in serving["environment"]
    # The canary the healthcheck imports lies next to it in the image.
    assert (
        Path(container_copy(str(CANARY_MODULE.relative_to(ROOT))))
        == Path(container_healthcheck_path()).parent / "canary.py"
    )
    assert seconds(serving["healthcheck"]["start_period"]) >= 60
    for name in ("prometheus", "grafana"):
        assert compose["services"][name]["profiles"] == ["monitoring"]
    assert "profiles" not in compose["services"]["build"] and "profiles" not in serving


def container_healthcheck_path() -> str:
    return container_copy("deploy/healthcheck.py")


def container_python_model_files() -> list[Path]:
    """The Python files of every Python-backend model a container loads (GPU and CPU configs), with their siblings."""
    ensemble = Ensemble.read(DEFAULT_REPOSITORY)
    files = set()
    for model in (ensemble.tokenizer, ensemble.classifier, ensemble.postprocess):
        for name in tritonserver_flags.DEVICE_CONFIGS.values():
            config = loaded_config(DEFAULT_REPOSITORY, model, name)
            if config.backend == "python":
                folder = DEFAULT_REPOSITORY / model / "1"
                files |= {folder / (config.default_model_filename or "model.py"), *folder.glob("*.py")}
    return sorted(files)


def test_serving_image_adds_exactly_what_the_python_models_import():
    needed = set().union(*(third_party_imports(path) for path in container_python_model_files()))
    siblings = {path.stem for path in container_python_model_files()}  # on sys.path in the Python backend
    needed -= {"triton_python_backend_utils"} | siblings  # the Python backend's own module
    assert needed == {"numpy", "tokenizers", "onnxruntime"}
    installed = pip_packages(SERVING_DOCKERFILE)
    assert installed == needed, "the image adds exactly what the Python models of the containers import"
    pins = locked()
    assert all(name in pins for name in installed), "pinned by requirements.lock"
    run = " ".join(v for cmd, value, _ in dockerfile_instructions(SERVING_DOCKERFILE) if cmd == "RUN" for v in value)
    assert "-c /tmp/requirements.lock" in run and "--no-deps" in run
    assert dockerfile_value(SERVING_DOCKERFILE, "USER") == ("triton-server",), "runs as the image's non-root user"
    assert dockerfile_value(SERVING_DOCKERFILE, "ENTRYPOINT") == ("/opt/emotion-triton/entrypoint.sh",)


def test_model_files_import_only_what_the_images_have():
    for path in DEFAULT_REPOSITORY.glob("*/1/*.py"):
        siblings = {sibling.stem for sibling in path.parent.glob("*.py")}  # on sys.path in the Python backend
        extra = third_party_imports(path) - siblings - ALLOWED_MODEL_IMPORTS
        assert not extra, f"{path.relative_to(ROOT)} imports {extra}: the serving image does not have them"


def extra_requirements(extra: str) -> set[str]:
    """The distributions an install with an extra of pyproject.toml gets: the package's own
    dependencies, the extra's, and those of the extras it names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {canonical(re.match(r"[A-Za-z0-9_.-]+", requirement).group()) for requirement in project["dependencies"]}
    for requirement in project["optional-dependencies"][extra]:
        name, _, nested = re.match(r"([A-Za-z0-9_.-]+)(\[([^\]]+)\])?", requirement).groups()[0:3]
        if canonical(name) == "emotion-triton":
            names |= set().union(*(extra_requirements(e.strip()) for e in nested.split(",")))
        else:
            names.add(canonical(name))
    return names


def test_build_image_installs_what_the_build_imports():
    sources = [ROOT / "build" / "build.py"] + [
        ROOT / "src" / "emotion_triton" / f"{name}.py"
        for name in (
            "build/pipeline",
            "build/torchscript_export",
            "build/onnx_export",
            "build/modeling",
            "build/training",
            "data",
            "hub",
            "evaluation/classification_metrics",
            "repository/model_config",
        )
    ]
    modules = set().union(*(third_party_imports(path) for path in sources))
    distributions = importlib.metadata.packages_distributions()
    needed = {canonical(distributions[module][0]) for module in modules}
    installed = pip_packages(BUILD_DOCKERFILE) | {"torch"}  # torch: the NGC PyTorch image's
    assert needed <= installed, f"docker/build.Dockerfile lacks {needed - installed}"
    # What the build needs without importing it (accelerate, which transformers.Trainer asks for):
    # the `build` extra's requirements. Missing, the image's build service failed at its first run.
    declared = extra_requirements("build")
    assert declared <= installed, f"docker/build.Dockerfile lacks {declared - installed} of the build extra"
    pins = locked()
    assert all(name in pins for name in installed), f"not in requirements.lock: {installed - set(pins)}"


# -- entrypoints ----------------------------------------------------------------------------------


def test_shell_scripts_pass_shellcheck():
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run(
        [str(shellcheck), str(SERVING_ENTRYPOINT), str(BUILD_ENTRYPOINT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run_serving_entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SERVING_ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=30,
    )


def test_serving_entrypoint_fills_in_the_admin_key(tmp_path):
    flag = f"--http-restricted-api=logging:admin-key={ADMIN_PLACEHOLDER}"
    odd = "k&ey/with\\odd|chars"
    given = run_serving_entrypoint("printf", "%s\n", "tritonserver", flag, TRITON_ADMIN_KEY=odd)
    assert given.returncode == 0, given.stderr
    assert given.stdout.splitlines() == ["tritonserver", f"--http-restricted-api=logging:admin-key={odd}"]

    secret = tmp_path / "key"
    secret.write_text("from-a-secret\n")
    from_file = run_serving_entrypoint("printf", "%s\n", flag, TRITON_ADMIN_KEY_FILE=str(secret))
    assert from_file.stdout.splitlines() == ["--http-restricted-api=logging:admin-key=from-a-secret"]

    random = run_serving_entrypoint("printf", "%s\n", flag, flag)
    first, second = random.stdout.splitlines()
    assert first == second and ADMIN_PLACEHOLDER not in first and len(first.rsplit("=", 1)[1]) >= 24
    assert "random key" in random.stderr
    # The key does not stay in the environment of tritonserver and its stubs.
    leaked = run_serving_entrypoint("env", TRITON_ADMIN_KEY=odd)
    assert "TRITON_ADMIN_KEY" not in leaked.stdout
    assert run_serving_entrypoint().returncode == 2
    assert SERVING_ENTRYPOINT.read_text().rstrip().splitlines()[-1].startswith("exec "), "exec: PID 1"


@pytest.fixture
def template(tmp_path) -> Path:
    """The repository's configurations and model code, without built files (as in the build image)."""
    target = tmp_path / "template"
    for path in DEFAULT_REPOSITORY.rglob("*"):
        if path.is_file() and (path.suffix == ".pbtxt" or path.name == "model.py"):
            (target / path.relative_to(DEFAULT_REPOSITORY)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.relative_to(DEFAULT_REPOSITORY))
    return target


def run_build_entrypoint(tmp_path, repository: Path, template: Path, **env) -> subprocess.CompletedProcess:
    fake_python = tmp_path / "fake-python"
    fake_python.write_text('#!/bin/sh\necho "python $*"\n')
    fake_python.chmod(0o755)
    variables = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake_python), "MODEL_REPOSITORY": str(repository)}
    variables.update(MODEL_REPOSITORY_TEMPLATE=str(template), **env)
    return subprocess.run(
        ["bash", str(BUILD_ENTRYPOINT)], capture_output=True, text=True, env=variables, cwd=tmp_path, timeout=30
    )


def test_build_entrypoint_builds_only_a_repository_without_a_model(tmp_path, template):
    ensemble = Ensemble.read(template)
    script = BUILD_ENTRYPOINT.read_text()
    for built in (ensemble.model_file, ensemble.tokenizer_file):
        model, _, name = built.relative_to(template).parts
        assert f"/{model}/*/{name}" in script, f"the script checks {name} where the build puts it, in any version"

    repository = tmp_path / "volume"  # an empty Kubernetes volume
    result = run_build_entrypoint(tmp_path, repository, template)
    assert result.returncode == 0, result.stderr
    assert f"python build/build.py --finetuned {serve.PUBLISHED_CHECKPOINT} --repository {repository}" in result.stdout
    assert (repository / "emotion" / "config.pbtxt").is_file(), "the configurations are copied in first"
    assert all((repository / name / "1").is_dir() for name in ("emotion", "emotion_classifier")), "version folders"

    finetune = run_build_entrypoint(tmp_path, repository, template, BUILD_MODE="finetune", BUILD_ARGS="--epochs 2")
    assert f"python build/build.py --repository {repository} --epochs 2" in finetune.stdout

    built = Ensemble.read(repository)
    for path in (built.model_file, built.tokenizer_file):  # version 3 only: a roll-out removed 1's files
        at = built.version_dir(path.parent.parent.name, 3) / path.name
        at.parent.mkdir(parents=True)
        at.write_text("built")
    skipped = run_build_entrypoint(tmp_path, repository, template, BUILD_MODE="finetune")
    assert skipped.returncode == 0 and "nothing to do" in skipped.stdout and "python " not in skipped.stdout
    # A new version while a server serves: built anyway, on the mounted data (BUILD_DATA_DIR).
    new = run_build_entrypoint(tmp_path, repository, template, BUILD_NEW_VERSION="1", BUILD_DATA_MOUNT="/data")
    assert f"--repository {repository} --data /data" in new.stdout, new.stdout
    rollback = run_build_entrypoint(tmp_path, repository, template, BUILD_MODE="rollback")
    assert f"python -m emotion_triton.commands.rollout --rollback --repository {repository}" in rollback.stdout
    rollout = run_build_entrypoint(tmp_path, repository, template, BUILD_MODE="rollout")
    assert rollout.stdout.strip() == f"python -m emotion_triton.commands.rollout --repository {repository}"

    wrong = run_build_entrypoint(tmp_path, tmp_path / "other", template, BUILD_MODE="train")
    assert wrong.returncode == 2 and "BUILD_MODE" in wrong.stderr

    checkpoint = tmp_path / "fine-tuned-elsewhere"  # BUILD_CHECKPOINT_DIR, mounted by docker-compose.yml
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    local = run_build_entrypoint(tmp_path, tmp_path / "v2", template, BUILD_CHECKPOINT_MOUNT=str(checkpoint))
    assert f"python build/build.py --finetuned {checkpoint} --repository {tmp_path / 'v2'}" in local.stdout
    empty = run_build_entrypoint(tmp_path, tmp_path / "v3", template, BUILD_CHECKPOINT_MOUNT=str(tmp_path / "none"))
    assert empty.returncode == 2 and "config.json is missing" in empty.stderr


def test_build_image_ships_the_repository_template():
    copies = dict(value for cmd, value, _ in dockerfile_instructions(BUILD_DOCKERFILE) if cmd == "COPY")
    env = dockerfile_env(BUILD_DOCKERFILE)
    assert copies["model_repository"] == env["MODEL_REPOSITORY_TEMPLATE"]
    assert env["BUILD_MODE"] == "export"
    assert "!model_repository/*/config.pbtxt" in dockerignore(BUILD_DOCKERFILE)


def dockerignore(path: Path) -> list[str]:
    lines = Path(f"{path}.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("path", [SERVING_DOCKERFILE, BUILD_DOCKERFILE], ids=lambda p: p.name)
def test_build_contexts_hold_only_what_the_dockerfiles_copy(path):
    """An allow-list per Dockerfile: never .venv/, runs/ or built models in the context or the image."""
    patterns = dockerignore(path)
    assert patterns[0] == "*", "everything is excluded first"
    allowed = [p[1:] for p in patterns[1:]]
    assert all(p.startswith("!") for p in patterns[1:])
    for cmd, value, _ in dockerfile_instructions(path):
        if cmd == "COPY":
            source = value[0]
            assert any(a == source or a.startswith(f"{source}/") for a in allowed), f"{source} is not in the context"
    assert not [a for a in allowed if a.endswith((".pt", ".json")) or a.startswith((".venv", "runs"))]


# -- the healthcheck, against a fake Triton -------------------------------------------------------


def load_healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeTriton(BaseHTTPRequestHandler):
    ready = 200
    infer_status = 200
    infer_body: dict = {}
    infer_seconds = 0.0  # how long each inference takes
    trickle = False  # answer one byte at a time, forever: no socket timeout ever fires
    inferences: list  # when each inference arrived (set per test)

    def do_GET(self):  # noqa: N802 - http.server's name
        self._answer(self.ready if self.path in ("/v2/health/ready", "/v2/health/live") else 404, {})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v2/models/emotion/infer" and body["inputs"][0]["datatype"] == "BYTES"
        if hasattr(self, "inferences"):
            self.inferences.append(time.monotonic())
        time.sleep(self.infer_seconds)
        if self.trickle:
            try:
                for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the check hung up
                pass
            return
        self._answer(self.infer_status, self.infer_body)

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_triton():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeTriton)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


GOOD_ANSWER = {
    "outputs": [
        {"name": "LABEL", "datatype": "BYTES", "shape": [1, 1], "data": ["joy"]},
        {"name": "SCORES", "datatype": "FP32", "shape": [1, 6], "data": [0.05, 0.8, 0.05, 0.04, 0.03, 0.03]},
    ]
}


@pytest.mark.parametrize(
    "ready, status, body, healthy",
    [
        (200, 200, GOOD_ANSWER, True),
        (200, 503, {"error": "Exceeds maximum queue size"}, True),  # overloaded but answering: alive
        (200, 500, {"error": "Failed to process the request(s): Stub process is not healthy."}, False),
        (503, 200, GOOD_ANSWER, False),
        (200, 200, {"outputs": [GOOD_ANSWER["outputs"][0]]}, False),
        (200, 200, {"outputs": [GOOD_ANSWER["outputs"][0], {"name": "SCORES", "data": [0.9, 0.9]}]}, False),
        (200, 400, {"error": "unexpected inference input 'TEXT'"}, False),
    ],
)
def test_healthcheck_fails_when_the_ensemble_cannot_answer(fake_triton, monkeypatch, ready, status, body, healthy):
    httpd, url = fake_triton
    handler = type("Handler", (FakeTriton,), {"ready": ready, "infer_status": status, "infer_body": body})
    monkeypatch.setattr(httpd, "RequestHandlerClass", handler)
    healthcheck = load_healthcheck()
    for health in ("ready", "live"):
        assert (healthcheck.main(["--url", url, "--health", health, "--timeout", "5"]) == 0) is healthy


def test_healthcheck_without_a_server(capsys):
    healthcheck = load_healthcheck()
    assert healthcheck.main(["--url", f"http://127.0.0.1:{free_port()}", "--timeout", "4"]) == 1
    assert "no answer" in capsys.readouterr().err


def run_healthcheck(httpd, url, monkeypatch, argv, **handler) -> tuple[int, float, list[float]]:
    """(exit code, seconds, arrival times of the inferences) of one check against the fake Triton."""
    inferences: list[float] = []
    monkeypatch.setattr(
        httpd, "RequestHandlerClass", type("Handler", (FakeTriton,), {**handler, "inferences": inferences})
    )
    start = time.monotonic()
    code = load_healthcheck().main(["--url", url, *argv])
    return code, time.monotonic() - start, [when - start for when in inferences]


def test_healthcheck_ends_within_its_deadline_and_sends_canaries_only_while_one_fits(fake_triton, monkeypatch, capsys):
    httpd, url = fake_triton
    budget = ["--health-timeout", "0.5", "--canary-timeout", "1", "--timeout", "2.6", "--canaries", "4"]
    # Slow but working (0.6 s an answer): a canary goes out while a whole canary timeout is left.
    code, took, sent = run_healthcheck(httpd, url, monkeypatch, budget, infer_seconds=0.6, infer_body=GOOD_ANSWER)
    assert code == 0 and len(sent) == 3 and took < 2.6, (took, sent)  # 0.6 s each: after 3, 0.8 s are left
    assert "3 canaries answered" in capsys.readouterr().out
    # An overload answer ends the check at once: the next canaries would wait in the same queues.
    code, took, sent = run_healthcheck(httpd, url, monkeypatch, budget, infer_status=503, infer_body={"error": "x"})
    assert code == 0 and len(sent) == 1 and "overloaded" in capsys.readouterr().out
    # A server that never answers: unhealthy when the canary's timeout runs out, well within --timeout.
    code, took, sent = run_healthcheck(httpd, url, monkeypatch, budget, infer_seconds=3.0, infer_body=GOOD_ANSWER)
    assert code == 1 and len(sent) == 1 and 0.9 < took < 2.6, took
    assert "no inference answer" in capsys.readouterr().err
    # The script itself stops at its deadline even when every read gets a byte in time.
    monkeypatch.setattr(httpd, "RequestHandlerClass", type("Handler", (FakeTriton,), {"trickle": True}))
    start = time.monotonic()
    script = subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--url", url, *budget], capture_output=True, text=True, timeout=30
    )
    took = time.monotonic() - start
    assert script.returncode == 1 and "did not finish within --timeout 2.6 s" in script.stderr, script.stderr
    assert took < 2.6 + PYTHON_START_SECONDS, took
    # Options whose canary does not fit the deadline are refused (exit 2), not run.
    with pytest.raises(SystemExit) as refused:
        load_healthcheck().parse_args(["--timeout", "10", "--canary-timeout", "9"])
    assert refused.value.code == 2


def healthcheck_argv(command: list[str]) -> list[str]:
    """The healthcheck's own arguments in a probe's command line."""
    assert command[:2] == ["python3", container_healthcheck_path()], command
    return command[2:]


def test_probes_outlast_the_worst_case_of_a_saturated_server(compose, cpu_compose, triton_container):
    """The worst case of a check, derived from the queue timeouts of the model configs each deployment
    loads, fits the timeout of every probe that runs it: a saturated server answers 503 or slowly,
    and neither a probe's timeout nor the healthcheck's own must turn that into "unhealthy"."""
    healthcheck = load_healthcheck()
    probes = []  # (where, healthcheck argv, the caller's timeout, --model-config-name, liveness)
    for label, merged in (("docker-compose.yml", compose), ("docker-compose.cpu.yml", cpu_compose)):
        service = merged["services"]["tritonserver"]
        config_name = flags(container_command(service.get("environment"))[1:]).get("--model-config-name")
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        probes.append(
            (label, healthcheck_argv(test[1:]), seconds(service["healthcheck"]["timeout"]), config_name, False)
        )
    assert "--model-config-name" not in flags(container_command(triton_container.get("env"))[1:])
    for probe, liveness in (("readinessProbe", False), ("livenessProbe", True)):
        settings = triton_container[probe]
        argv = healthcheck_argv(settings["exec"]["command"])
        probes.append((f"deployment.yaml {probe}", argv, settings["timeoutSeconds"], None, liveness))
    # By hand (docs/deploy.md): `python3 healthcheck.py` without options, on the GPU configs.
    probes.append(("healthcheck.py defaults", [], float("inf"), None, False))

    for where, argv, caller_timeout, config_name, liveness in probes:
        args = healthcheck.parse_args(argv)
        worst = canary_worst_case(DEFAULT_REPOSITORY, config_name)
        assert args.canary_timeout >= worst, (
            f"{where}: a canary may take {worst:g} s on a saturated server ({config_name or 'config.pbtxt'}: "
            f"queue timeouts + executions), --canary-timeout is {args.canary_timeout:g}"
        )
        assert args.health_timeout + args.canary_timeout <= args.timeout
        assert caller_timeout >= args.timeout + PYTHON_START_SECONDS, (
            f"{where}: the check may take {args.timeout:g} s plus python3's start, its caller waits {caller_timeout:g} s"
        )
        if liveness:
            assert args.health == "live" and args.canaries == 1, f"{where}: one health call and one canary"
        elif where != "healthcheck.py defaults":
            assert args.health == "ready" and args.canaries >= 2, f"{where}: a dead stub hides behind one canary"
    # One failed check never acts alone, and a broken pod leaves the Service before it is restarted.
    readiness, liveness_probe = triton_container["readinessProbe"], triton_container["livenessProbe"]
    assert readiness["failureThreshold"] >= 2 and liveness_probe["failureThreshold"] >= 2
    assert all(int(c["services"]["tritonserver"]["healthcheck"]["retries"]) >= 2 for c in (compose, cpu_compose))

    def detection(probe: dict, hung: bool) -> float:
        """Seconds of failing checks before the kubelet acts: it runs one check at a time, a period apart."""
        return probe["failureThreshold"] * max(probe["periodSeconds"], probe["timeoutSeconds"] if hung else 0)

    for hung in (False, True):  # failing answers, or no answer at all
        assert detection(liveness_probe, hung) > detection(readiness, hung), (
            "the liveness probe restarts a pod only after the readiness probe has taken it out of the Service"
        )
    # docs/deploy.md's table gives the worst cases the configs give.
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    for config_name in {None, *(name for _, _, _, name, _ in probes)}:
        worst = canary_worst_case(DEFAULT_REPOSITORY, config_name)
        assert f"= {worst:g} s |" in deploy_doc, f"docs/deploy.md does not give the worst case {worst:g} s"


def test_canary_names_are_the_ensembles():
    """The canary's constants (the image's python3 cannot read config.pbtxt: no protobuf) are the ensemble's."""
    healthcheck = load_healthcheck()
    ensemble = Ensemble.read(DEFAULT_REPOSITORY)
    config = ensemble.config(ensemble.name)
    assert canary.DEFAULT_MODEL == healthcheck.DEFAULT_MODEL == ensemble.name
    assert [i.name for i in config.input] == [canary.INPUT_NAME] == [ensemble.text_input]
    assert [o.name for o in config.output] == [canary.LABEL_NAME, canary.SCORES_NAME] == list(ensemble.outputs)
    assert canary.DEFAULT_URL == healthcheck.DEFAULT_URL == f"http://{DEFAULT_URLS['http']}"
    # Standard library only, the image's python3 runs them (`canary`: the sibling the image copies).
    assert third_party_imports(HEALTHCHECK) == {"canary"} and third_party_imports(CANARY_MODULE) == set()


def test_the_healthcheck_runs_as_in_the_image_with_the_canary_next_to_it(tmp_path):
    """healthcheck.py and canary.py in a folder of their own, a python3 without site-packages: no emotion_triton."""
    image = tmp_path / "opt-emotion-triton"
    image.mkdir()
    shutil.copy(HEALTHCHECK, image / "healthcheck.py")
    shutil.copy(CANARY_MODULE, image / "canary.py")
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-S", "-E", str(image / "healthcheck.py"), "--url", url, "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and result.stderr.startswith(f"unhealthy: no answer from {url}"), result.stderr


# -- compose and Kubernetes run the same containers ------------------------------------------------

# compose service -> the Kubernetes manifest, kind and container that run the same image.
SHARED_CONTAINERS = {
    "tritonserver": ("deploy/k8s/deployment.yaml", "Deployment", "tritonserver", SERVING_DOCKERFILE),
    "build": ("deploy/k8s/build-job.yaml", "Job", "build", BUILD_DOCKERFILE),
}
# What TRITON_ADMIN_KEY holds when the operator gives a key: compose's host variable, the Secret.
OPERATOR_SECRET = "<the operator's secret>"
# compose's only: a host folder has no place in a cluster.
# BUILD_CHECKPOINT_DIR and BUILD_DATA_DIR: a fine-tuned checkpoint and labelled data on the docker host.
COMPOSE_ONLY_MOUNTS = {"/checkpoint", "/data"}
# Facts the two differ in on purpose, and why.
BY_DESIGN = {
    ("build", "GPUs"): "compose reserves one for BUILD_MODE=finetune; the Job exports on the CPU, so the only "
    "GPU of a one-GPU cluster stays the server's (test_kubernetes_layout_rolls_out_on_a_cluster_with_one_gpu)",
    **dict.fromkeys(
        [
            ("build", f"environment {name}")
            for name in ("EMOTION_TRITON_SERVER", "EMOTION_TRITON_CLASSIFIER", "TRITON_ADMIN_KEY")
        ],
        "compose's build rolls its version out on the one tritonserver; behind a Service of several pods "
        "the model-control API reaches one of them, so the Job installs the version and pods serve it once "
        "restarted (docs/deploy.md, Kubernetes)",
    ),
}
# What docker-compose.cpu.yml changes (test_cpu_override_*): everything else is docker-compose.yml's.
CPU_HOST_CHANGES = {"GPUs", f"environment {DEVICE_VARIABLE}", "environment EMOTION_TRITON_CLASSIFIER"}
UNSET = "(unset)"
RUNTIME_DEFAULT = "(the runtime's default)"
IMAGES = "(the image's ENTRYPOINT and CMD)"


def compose_config(*files: Path) -> dict:
    """The model `docker compose -f ... config` prints: Compose v2's own merge, interpolation and
    normalisation (no engine needed). Every ${VAR:-default} at its default but TRITON_ADMIN_KEY, the
    operator's; no .env file."""
    command = [str(compose_binary()), "--project-directory", str(ROOT), "--env-file", os.devnull]
    command += [option for path in files for option in ("-f", str(path))]
    result = subprocess.run(
        [*command, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "TRITON_ADMIN_KEY": OPERATOR_SECRET},
    )
    assert result.returncode == 0, f"docker compose config: {result.stderr}"
    return json.loads(result.stdout)


def stand_in_dockerfile(image_file: Path) -> Path:
    """docker/stand-in/'s copy of the base image (nvcr.io/nvidia/<name>:...) of one of the project's Dockerfiles."""
    (base,) = dockerfile_value(image_file, "FROM")
    return STAND_IN_DIR / f"{base.rsplit('/', 1)[-1].split(':')[0]}.Dockerfile"


def image_user(image_file: Path, user: str | None = None) -> str:
    """uid:gid of a container of the image run as `user` (a name or uid, with or without a group), by default
    as the image's USER, else its base image's, else root. Names and groups are those the stand-in of the
    base image creates, as NVIDIA's image does (triton-server: uid and gid 1000; tests/test_containers.py
    sees it in the running container)."""
    stand_in = stand_in_dockerfile(image_file)
    if user is None:
        users = [
            value[0]
            for path in (stand_in, image_file)
            for cmd, value, _ in dockerfile_instructions(path)
            if cmd == "USER"
        ]
        user = users[-1] if users else "root"
    accounts = {"root": ("0", "0")}
    for cmd, value, _ in dockerfile_instructions(stand_in):
        for options in re.findall(r"\buseradd\s+([^;&|]+)", " ".join(value)) if cmd == "RUN" else []:
            words = shlex.split(options)
            assert "--uid" in words and "--user-group" in words, (
                f"{stand_in.name}: useradd {options}: which uid and gid?"
            )
            uid = words[words.index("--uid") + 1]
            accounts[words[-1]] = (uid, uid)
    accounts.update({uid: (uid, gid) for uid, gid in list(accounts.values())})
    name, _, group = user.partition(":")
    assert name in accounts or name.isdigit(), f"{image_file.name}: user {name} is not in {stand_in.name}: which uid?"
    uid, gid = accounts.get(name, (name, "0"))  # docker: a uid without an account runs with gid 0
    return f"{uid}:{accounts.get(group, (group, group))[1] if group else gid}"


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity of bytes (1Gi, 512Mi, 2G)."""
    units = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    number, unit = re.fullmatch(r"(\d+)(|k|M|G|T|Ki|Mi|Gi)", str(quantity)).groups()
    return int(number) * units[unit]


def effective_environment(image_file: Path, given: dict[str, str | None]) -> dict[str, str]:
    """The image's ENV with a container's variables over it; empty means unset to both entrypoints."""
    environment = {**dockerfile_env(image_file), **{name: value for name, value in given.items() if value is not None}}
    return {name: value for name, value in environment.items() if value}


def capability_names(capabilities: list[str] | None) -> str:
    """Linux capabilities as both runtimes take them: NET_ADMIN or CAP_NET_ADMIN, any case."""
    return " ".join(sorted(name.upper().removeprefix("CAP_") for name in capabilities or []))


def healthcheck_facts(argv: list[str] | None) -> dict[str, str]:
    """The program of a healthcheck and what it checks; its timing is test_probes_outlast_...'s (it differs by design)."""
    if argv is None:
        return {"healthcheck program": UNSET, "healthcheck checks": UNSET}
    args = load_healthcheck().parse_args(argv[2:])
    return {
        "healthcheck program": " ".join(argv[:2]),
        "healthcheck checks": f"--health={args.health} --canaries={args.canaries} --url={args.url} --model={args.model}",
    }


def repository_fact(service: str, environment: dict[str, str], mounts: dict[str, str]) -> str:
    """Where the container's program finds the model repository, and how that path is mounted."""
    if service == "tritonserver":
        path = flags(container_command(environment)[1:])["--model-repository"]
    else:
        path = environment.get("MODEL_REPOSITORY", UNSET)
    return f"{path} {mounts.get(path, 'not mounted')}"


def compose_container_facts(service: str, settings: dict) -> dict[str, str]:
    """The container-level facts of a service of `docker compose config`'s model, as the container gets them."""
    image_file = SHARED_CONTAINERS[service][3]
    environment = effective_environment(image_file, settings.get("environment") or {})
    mounts = {
        volume["target"]: "read-only" if volume.get("read_only") else "writable"
        for volume in settings.get("volumes", [])
        if volume["target"] not in COMPOSE_ONLY_MOUNTS
    }
    options = settings.get("security_opt") or []
    seccomp = [
        option.partition("=")[2] or option.partition(":")[2] for option in options if option.startswith("seccomp")
    ]
    test = (settings.get("healthcheck") or {}).get("test")
    gpus = [
        device.get("count", len(device.get("device_ids", [])) or "all")
        for device in (((settings.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
        or []
        if "gpu" in device.get("capabilities", [])
    ]
    grace = settings.get("stop_grace_period")
    return {
        "image": settings["image"],
        "command": IMAGES
        if settings.get("entrypoint") is None and settings.get("command") is None
        else f"entrypoint {settings.get('entrypoint')} command {settings.get('command')}",
        "user": image_user(image_file, settings.get("user")),
        "no new privileges": str(any(o in ("no-new-privileges", "no-new-privileges:true") for o in options)),
        "capabilities dropped": capability_names(settings.get("cap_drop")),
        "capabilities added": capability_names(settings.get("cap_add")),
        "privileged": str(bool(settings.get("privileged"))),
        "read-only root filesystem": str(bool(settings.get("read_only"))),
        "seccomp profile": seccomp[0] if seccomp else RUNTIME_DEFAULT,
        "PID 1": "an init process" if settings.get("init") else "the image's ENTRYPOINT",
        **{f"mount {target}": access for target, access in mounts.items()},
        "model repository": repository_fact(service, environment, mounts),
        "/dev/shm bytes": str(settings["shm_size"]) if settings.get("shm_size") else RUNTIME_DEFAULT,
        **{f"environment {name}": value for name, value in environment.items()},
        **healthcheck_facts(test[1:] if test and test[0] == "CMD" else test),
        "seconds from SIGTERM to SIGKILL": f"{seconds(grace):g}" if grace else RUNTIME_DEFAULT,
        "GPUs": str(sum(gpus)) if all(isinstance(n, int) for n in gpus) else "all",
    }


def k8s_container_facts(service: str, pod: dict, container: dict) -> dict[str, str]:
    """The same facts of a Kubernetes container: its pod's securityContext under its own, volumes, probes."""
    image_file = SHARED_CONTAINERS[service][3]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    image_uid, _, image_gid = image_user(image_file).partition(":")
    variables = {}
    for variable in container.get("env", []):
        secret = variable.get("valueFrom", {}).get("secretKeyRef")
        if secret:
            optional = secret.get("optional") is True
            variables[variable["name"]] = OPERATOR_SECRET if optional else f"Secret {secret['name']} (required)"
        else:
            variables[variable["name"]] = (
                json.dumps(variable["valueFrom"]) if "valueFrom" in variable else variable.get("value", "")
            )
    environment = effective_environment(image_file, variables)
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts, shm = {}, RUNTIME_DEFAULT
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if mount["mountPath"] == "/dev/shm" and volume.get("emptyDir", {}).get("medium") == "Memory":
            shm = str(quantity_bytes(volume["emptyDir"].get("sizeLimit", "0")))
            continue
        read_only = mount.get("readOnly") or volume.get("persistentVolumeClaim", {}).get("readOnly")
        mounts[mount["mountPath"]] = "read-only" if read_only else "writable"
    capabilities = security.get("capabilities", {})
    seccomp = security.get("seccompProfile", {}).get("type")
    probes = [container.get(probe, {}).get("exec", {}).get("command") for probe in ("readinessProbe", "livenessProbe")]
    programs = {" ".join(argv[:2]) for argv in probes if argv}
    facts_of_checks = healthcheck_facts(probes[0])  # compose's healthcheck acts as the readiness probe
    if len(programs) > 1:
        facts_of_checks["healthcheck program"] = " | ".join(sorted(programs))
    grace = pod.get("terminationGracePeriodSeconds")
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if grace is not None and pre_stop:
        assert pre_stop[0] == "sleep", f"{service}: a preStop hook other than a sleep takes an unknown time"
        grace -= int(pre_stop[1])
    return {
        "image": container["image"],
        "command": IMAGES
        if "command" not in container and "args" not in container
        else f"entrypoint {container.get('command')} command {container.get('args')}",
        "user": f"{security.get('runAsUser', image_uid)}:{security.get('runAsGroup', image_gid)}",
        "no new privileges": str(security.get("allowPrivilegeEscalation") is False),
        "capabilities dropped": capability_names(capabilities.get("drop")),
        "capabilities added": capability_names(capabilities.get("add")),
        "privileged": str(bool(security.get("privileged"))),
        "read-only root filesystem": str(bool(security.get("readOnlyRootFilesystem"))),
        # The kubelet's default is Unconfined, docker's its default profile: only RuntimeDefault matches docker.
        "seccomp profile": {"RuntimeDefault": RUNTIME_DEFAULT, None: "unconfined"}.get(seccomp, seccomp),
        "PID 1": "the pause process" if pod.get("shareProcessNamespace") else "the image's ENTRYPOINT",
        **{f"mount {target}": access for target, access in mounts.items()},
        "model repository": repository_fact(service, environment, mounts),
        "/dev/shm bytes": shm,
        **{f"environment {name}": value for name, value in environment.items()},
        **facts_of_checks,
        "seconds from SIGTERM to SIGKILL": f"{grace:g}" if grace is not None else RUNTIME_DEFAULT,
        "GPUs": str(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)),
    }


def image_repository(service: str) -> str:
    """Where the image's program finds the model repository: the image command's --model-repository (the
    server), the build image's MODEL_REPOSITORY."""
    if service == "tritonserver":
        return flags(container_command()[1:])["--model-repository"]
    return dockerfile_env(SHARED_CONTAINERS[service][3])["MODEL_REPOSITORY"]


def image_facts(service: str) -> dict[str, str]:
    """What the image itself says, where it says it: both files must give the container that."""
    image_file = SHARED_CONTAINERS[service][3]
    access = "read-only" if service == "tritonserver" else "writable"  # the server only reads it, the build fills it
    repository = f"{image_repository(service)} {access}"
    facts = {"command": IMAGES, "user": image_user(image_file), "model repository": repository}
    if service == "tritonserver":
        facts["healthcheck program"] = f"python3 {container_healthcheck_path()}"
    return facts


def test_compose_and_kubernetes_run_the_same_containers():
    """A table of the container-level facts of compose's `tritonserver` and `build` services (the merged
    model of the real Compose v2) and of the Deployment's and the Job's containers, as each container gets
    them (the image's value where a file sets none): they agree, and agree with the image where it decides."""
    models = {
        "docker-compose.yml": compose_config(COMPOSE_FILE),
        "docker-compose.yml + docker-compose.cpu.yml": compose_config(COMPOSE_FILE, CPU_COMPOSE_FILE),
    }
    problems, lines = [], []
    for service, (manifest, kind, name, image_file) in SHARED_CONTAINERS.items():
        pod = k8s_object(kind)["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == name]
        table = {where: compose_container_facts(service, model["services"][service]) for where, model in models.items()}
        table[manifest] = k8s_container_facts(service, pod, container)
        image = image_facts(service)
        gpu_file, cpu_files, k8s_file = table
        rows = sorted(set().union(*table.values()))
        assert set(image) <= set(rows), (
            f"{service}: facts of the image missing from the table: {set(image) - set(rows)}"
        )
        lines.append(f"{service} | {' | '.join(table)} | the image ({image_file.relative_to(ROOT)})")
        for row in rows:
            values = {where: facts.get(row, UNSET) for where, facts in table.items()}
            lines.append(f"{row} | {' | '.join(values.values())} | {image.get(row, '')}")
            if (service, row) in BY_DESIGN:
                assert values[gpu_file] != values[k8s_file], f"BY_DESIGN is stale: {service} {row} is the same now"
            elif values[gpu_file] != values[k8s_file]:
                problems.append(
                    f"{service} {row}: {gpu_file} gives {values[gpu_file]!r}, {k8s_file} gives {values[k8s_file]!r}"
                )
            if row not in CPU_HOST_CHANGES and values[cpu_files] != values[gpu_file]:
                problems.append(
                    f"{service} {row}: {cpu_files} gives {values[cpu_files]!r}, {gpu_file} gives {values[gpu_file]!r}"
                )
            for where, value in values.items():
                if row in image and value != image[row]:
                    problems.append(
                        f"{service} {row}: {where} gives {value!r}, {image_file.relative_to(ROOT)} says {image[row]!r}"
                    )
    print("\n".join(lines))
    assert not problems, "compose and Kubernetes disagree:\n  " + "\n  ".join(problems)


# -- Kubernetes -----------------------------------------------------------------------------------


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas():
    documents = k8s_documents()
    assert {d["kind"] for _, d in documents} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "Job",
    }
    for resource, document in documents:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{resource} ({document['kind']}) is invalid for Kubernetes {version}: {error}")
    # The validator is strict: a misspelt field fails.
    typo = json.loads(json.dumps(k8s_object("Deployment")))
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[-1], strict=True)


def test_kubernetes_objects_refer_to_each_other(deployment, triton_container):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod_labels
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    for service in (d for _, d in k8s_documents() if d["kind"] == "Service"):
        assert service["spec"]["selector"] == pod_labels
        ports = {p["name"] for p in triton_container["ports"]}
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    pdb = k8s_object("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == pod_labels
    hpa = k8s_object("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert pdb["spec"]["maxUnavailable"] == 1

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {i["name"] for i in kustomization["images"]}
    pod_specs = [deployment["spec"]["template"]["spec"], k8s_object("Job")["spec"]["template"]["spec"]]
    used = {
        c["image"].rpartition(":")[0] for spec in pod_specs for c in spec["containers"] + spec.get("initContainers", [])
    }
    assert used == images  # compose's: test_compose_and_kubernetes_run_the_same_containers


def test_kubernetes_model_repository_volume(deployment, triton_container):
    """The build Job fills the folder of the claim the server pods read, at the path each image uses (how
    each mounts it: test_compose_and_kubernetes_run_the_same_containers)."""
    claim = k8s_object("PersistentVolumeClaim")["metadata"]["name"]
    job = k8s_object("Job")["spec"]["template"]["spec"]
    pod = deployment["spec"]["template"]["spec"]

    def repository_mounts(spec, container):
        (volume,) = [v["name"] for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
        return [m for m in container["volumeMounts"] if m["name"] == volume]

    (serving_mount,) = repository_mounts(pod, triton_container)
    assert serving_mount["mountPath"] == image_repository("tritonserver")
    (build_container,) = job["containers"]
    (build_mount,) = repository_mounts(job, build_container)
    assert build_mount["mountPath"] == image_repository("build")
    assert build_mount["subPath"] == serving_mount["subPath"], "a subfolder: a volume's lost+found is no model"
    (wait,) = pod["initContainers"]
    assert repository_mounts(pod, wait)[0]["mountPath"] == serving_mount["mountPath"]


def test_kubernetes_probes_and_shutdown(deployment, triton_container):
    healthcheck = load_healthcheck()
    assert triton_container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for probe, health in (("readinessProbe", "ready"), ("livenessProbe", "live")):
        args = healthcheck.parse_args(healthcheck_argv(triton_container[probe]["exec"]["command"]))
        assert args.health == health
        assert triton_container[probe]["timeoutSeconds"] > args.timeout, (
            f"{probe}: the kubelet must wait for the answer"
        )
    assert triton_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = triton_container["lifecycle"]["preStop"]["exec"]["command"]
    exit_timeout = int(flags(container_command(triton_container.get("env"))[1:])["--exit-timeout-secs"])
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + exit_timeout
    # The kubelet refuses to start it as root (its uid: test_compose_and_kubernetes_run_the_same_containers).
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_kubernetes_layout_rolls_out_on_a_cluster_with_one_gpu(deployment, triton_container):
    """At the HPA's minimum, a rollout needs no GPU beyond the pods' own, and nothing else asks for one."""
    gpus_per_pod = int(triton_container["resources"]["limits"]["nvidia.com/gpu"])
    hpa = k8s_object("HorizontalPodAutoscaler")
    strategy = deployment["spec"]["strategy"]
    if strategy["type"] == "Recreate":
        surge = 0
    else:
        rolling = strategy["rollingUpdate"]
        surge, unavailable = rolling["maxSurge"], rolling["maxUnavailable"]
        assert isinstance(surge, int) and isinstance(unavailable, int), "absolute numbers: percentages round"
        assert unavailable >= 1, "without a spare GPU a rollout only progresses by stopping an old pod first"
    assert hpa["spec"]["minReplicas"] == 1, "one replica unless the operator raises it (docs/deploy.md)"
    assert (hpa["spec"]["minReplicas"] + surge) * gpus_per_pod <= 1, "a rollout at the minimum needs a spare GPU"
    # Nothing else holds a GPU: the init container, the build Job (export) run without.
    pod = deployment["spec"]["template"]["spec"]
    job = k8s_object("Job")["spec"]["template"]["spec"]
    for container in pod["initContainers"] + job["containers"]:
        assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {})), container["name"]
    # A drain may still evict the only pod (a minAvailable of 1 would block drains forever).
    pdb = k8s_object("PodDisruptionBudget")
    assert "minAvailable" not in pdb["spec"] and pdb["spec"]["maxUnavailable"] >= hpa["spec"]["minReplicas"]
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    for larger in ("maxSurge: 1", "maxUnavailable: 0", "minReplicas: 2"):
        assert larger in deploy_doc, f"docs/deploy.md must say what to change on larger clusters ({larger})"


def duration_seconds(text: str) -> float:
    """A Prometheus duration (1m, 30s, 1h30m, 500ms)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|[smhdwy])", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def promql_nodes(node):
    """Every node of a parsed PromQL expression."""
    yield node
    for attribute in ("lhs", "rhs", "expr"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from promql_nodes(child)
    for child in getattr(node, "args", None) or []:
        yield from promql_nodes(child)


def test_autoscaling_query_has_samples_and_counts_the_same_requests():
    (rule,) = adapter_rules()
    query = (
        rule["metricsQuery"].replace("<<.LabelMatchers>>", 'namespace="default",pod="p"').replace("<<.GroupBy>>", "pod")
    )
    expression = promql_parser.parse(query)
    # Samples: every range window holds 4 scrapes or more of the slowest interval the docs set up.
    monitor = yaml.safe_load((K8S / "podmonitor.yaml").read_text())
    intervals = {e["interval"] for e in monitor["spec"]["podMetricsEndpoints"]} | {PROMETHEUS_CHART_SCRAPE_INTERVAL}
    slowest = max(duration_seconds(i) for i in intervals)
    windows = [
        node.range.total_seconds()
        for node in promql_nodes(expression)
        if isinstance(node, promql_parser.MatrixSelector)
    ]
    assert windows and min(windows) >= 4 * slowest, f"windows {windows} s for a scrape interval of {slowest:g} s"
    # The same requests: queue time over successes (Triton adds a request's queue time only when it counts it
    # as a success), same window, same matchers, same grouping; only an idle 0/0 is guarded (clamp_min 1).
    assert isinstance(expression, promql_parser.BinaryExpr) and str(expression.op) == "/"
    numerator, denominator = expression.lhs, expression.rhs
    assert isinstance(denominator, promql_parser.Call) and denominator.func.name == "clamp_min"
    denominator, floor = denominator.args
    assert isinstance(floor, promql_parser.NumberLiteral) and floor.val == 1
    selectors = []
    for side in (numerator, denominator):
        (selector,) = [n for n in promql_nodes(side) if isinstance(n, promql_parser.MatrixSelector)]
        selectors.append(selector)
        assert str(side).replace(selector.vector_selector.name, "METRIC") == str(numerator).replace(
            selectors[0].vector_selector.name, "METRIC"
        ), f"numerator and denominator differ beyond the metric: {side} / {numerator}"
    assert [s.vector_selector.name for s in selectors] == [
        "nv_inference_queue_duration_us",
        "nv_inference_request_success",
    ]
    assert "1 +" not in rule["metricsQuery"].replace("(1+", "(1 +"), "no phantom request in the denominator"


def test_volume_claim_needs_a_storage_class_the_operator_chooses():
    """No class is guessed: the default class of most clusters has no ReadWriteMany and the claim would stay
    Pending without an error. The placeholder is not a valid class name, so the API server refuses the claim
    (`kubectl apply -k` fails, naming spec.storageClassName) until the operator writes a real one."""
    claim = k8s_object("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    storage_class = claim["spec"].get("storageClassName")
    assert storage_class, "an absent storageClassName silently takes the cluster's default class"
    dns_subdomain = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"  # ValidateClassName
    assert not re.fullmatch(dns_subdomain, storage_class) or len(storage_class) > 253, (
        f"{storage_class!r} is a valid class name: a cluster without it leaves the claim Pending, silently"
    )
    assert re.fullmatch(dns_subdomain, "nfs-client") and not re.fullmatch(dns_subdomain, "CHOOSE_ME")
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    assert storage_class in deploy_doc and "kubectl get storageclass" in deploy_doc


def test_every_documented_apply_replaces_the_build_job():
    """A Job's pod template is immutable: after `kustomize edit set image`, `kubectl apply -k` fails on the
    existing Job. Every apply the docs give to run deletes the Job first; the new one finds the model and exits."""
    job = k8s_object("Job")["metadata"]["name"]
    delete = f"kubectl delete job {job} --ignore-not-found && kubectl apply -k deploy/k8s"
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    commands = {
        "docs/deploy.md": "\n".join(re.findall(r"```(?:bash|sh)\n(.*?)```", deploy_doc, re.DOTALL)),
        "deploy/k8s/build-job.yaml": (K8S / "build-job.yaml").read_text(),
    }
    for name, text in commands.items():
        lines = [line for line in text.splitlines() if "kubectl apply -k deploy/k8s" in line]
        assert lines, f"{name} shows no apply"
        for line in lines:
            assert delete in line, f"{name}: `{line.strip()}` fails after an image change; use `{delete}`"
    assert f"kubectl wait --for=condition=complete job/{job}" in deploy_doc
    # Harmless to run again: the entrypoint skips a repository that has a model
    # (test_build_entrypoint_builds_only_a_repository_without_a_model).
    assert "nothing to do" in BUILD_ENTRYPOINT.read_text()


def test_kustomize_renders_the_manifests(tmp_path):
    """The real kustomize (kubectl's) builds deploy/k8s; skipped where kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert sorted(d["kind"] for d in documents) == sorted(d["kind"] for _, d in k8s_documents())
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)


def adapter_rules() -> list[dict]:
    return yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"]


def test_autoscaler_metric_is_served_by_prometheus_adapter():
    hpa = k8s_object("HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    names = {rule["name"]["as"] for rule in adapter_rules()}
    assert metric["pods"]["metric"]["name"] in names
    for rule in adapter_rules():
        query = rule["metricsQuery"].replace("<<.LabelMatchers>>", 'namespace="default",pod="p"')
        promql_parser.parse(query.replace("<<.GroupBy>>", "pod"))
        promql_parser.parse(rule["seriesQuery"])
        assert "nv_inference_queue_duration_us" in query and 'model="emotion_classifier"' in query
    monitor = yaml.safe_load((K8S / "podmonitor.yaml").read_text())
    deployment = k8s_object("Deployment")
    assert monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]


def test_autoscaling_target_sits_above_the_classifiers_batching_window():
    """Every request may wait one batching window for its batch; only waits beyond it mean a busy GPU."""
    ensemble = Ensemble.read()
    window_us = ensemble.config(ensemble.classifier).dynamic_batching.max_queue_delay_microseconds
    (metric,) = k8s_object("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert int(metric["pods"]["target"]["averageValue"]) == 5 * window_us


# -- Prometheus and Grafana -----------------------------------------------------------------------


def test_grafana_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = {v["source"]: v["target"] for v in grafana["volumes"] if isinstance(v, dict)}
    provisioning = ROOT / "docker" / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "emotion-triton.yml").read_text())["providers"]
    assert provider["options"]["path"] == mounts["./docker/grafana/dashboards"]
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    dashboard_file = ROOT / "docker" / "grafana" / "dashboards" / Path(home).name
    assert home == f"{provider['options']['path']}/{dashboard_file.name}"

    dashboard = json.loads(dashboard_file.read_text())
    expressions = {}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
            promql_parser.parse(target["expr"].replace("$__rate_interval", "1m"))
            expressions.setdefault(panel["title"].lower(), []).append(target["expr"])
    required = {
        "texts / s": "nv_inference_count",
        "requests / s": "nv_inference_request_success",
        "queue time": "nv_inference_queue_duration_us",
        "compute time": "nv_inference_compute_infer_duration_us",
        "dynamic batch size": "nv_inference_exec_count",
        "failures / s by reason": "nv_inference_request_failure",
        "gpu utilisation": "nv_gpu_utilization",
    }
    for title, metric in required.items():
        matching = [e for t, exprs in expressions.items() if title in t for e in exprs]
        assert any(metric in e for e in matching), f"no '{title}' panel on {metric}"
    failures = [e for t, exprs in expressions.items() if "reason" in t for e in exprs]
    assert any("reason" in e for e in failures)
    assert any("by (model)" in e for t, exprs in expressions.items() if "queue" in t for e in exprs), "per model"


# -- documentation --------------------------------------------------------------------------------


def readme_deploy_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## Deployment", 1)[1].split("\n## ", 1)[0]


def test_docs_name_files_that_exist():
    for name, text in (
        ("deploy.md", (ROOT / "docs" / "deploy.md").read_text()),
        ("README.md", readme_deploy_section()),
    ):
        paths = set(re.findall(r"(?<![\w/.-])((?:deploy|docker|docs|model_repository)/[\w./-]*\w)", text))
        paths |= {"docker-compose.yml"} if "docker-compose.yml" in text else set()
        assert paths, name
        built = ("model.pt", "tokenizer.json", ".server.json", ".last_version")  # written by the build or server
        missing = sorted(p for p in paths if not (ROOT / p).exists() and not p.endswith(built))
        assert not missing, f"{name} names files that do not exist: {missing}"
        release = yaml.safe_load(COMPOSE_FILE.read_text())["x-ngc-release"]
        for named in re.findall(r"nvcr\.io/nvidia/[\w-]+:(\d\d\.\d\d)", text):
            assert named == release, f"{name} names release {named}, docker-compose.yml pins {release}"
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "```mermaid" in deploy
    section = readme_deploy_section()
    assert "docker compose up" in section and "kubectl apply -k deploy/k8s" in section


def test_docs_state_the_gpu_driver_and_cuda_floor(compose):
    release = compose["x-ngc-release"]
    assert release in GPU_FLOOR, f"look up release {release}'s driver, CUDA and GPU requirements in its release notes"
    cuda, driver, capability = GPU_FLOOR[release]
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    for fact in (cuda, driver, f"compute capability {capability}", "docker-compose.cpu.yml"):
        assert fact in deploy_doc, f"docs/deploy.md does not state {fact!r}"
