"""The images' Dockerfiles and entrypoints, without a Docker engine: the image command is the one
definition of tritonserver's flags (those the local server runs too), the images install what their
code imports, pinned by the lock, the entrypoints run for real (shellcheck, the admin key, the build's
repository), and the build contexts hold only what the Dockerfiles copy."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_triton.commands import serve
from emotion_triton.repository import DEFAULT_REPOSITORY, VARIANTS, Ensemble
from emotion_triton.serving import local_server as server
from emotion_triton.serving import tritonserver_flags
from emotion_triton.serving.tritonserver_flags import DEVICE_VARIABLE
from tests.helpers.deploy_files import (
    BUILD_DOCKERFILE,
    BUILD_ENTRYPOINT,
    FLAGS_MODULE,
    ROOT,
    SERVING_DOCKERFILE,
    SERVING_ENTRYPOINT,
)
from tests.helpers.dockerfiles import (
    canonical,
    container_copy,
    dockerfile_env,
    dockerfile_instructions,
    dockerfile_value,
    dockerignore,
    extra_requirements,
    locked,
    pip_packages,
    third_party_imports,
)
from tests.helpers.images import (
    ADMIN_PLACEHOLDER,
    container_command,
    device,
    flags,
    loaded_config,
    run_serving_entrypoint,
)

ALLOWED_MODEL_IMPORTS = {"numpy", "torch", "tokenizers", "onnxruntime", "triton_python_backend_utils"}


# Flags only the local server has (the wheel's backends, loopback).
LOCAL_ONLY = {
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
    "--model-config-name",  # the device's: the production configs on a GPU, a CPU variant elsewhere
}


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
    production = VARIANTS["production"].config_name  # the production configs and the served version's pins
    assert flags(container_command()[1:])["--model-config-name"] == production


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
    assert skipped.returncode == 0 and "nothing to do" in skipped.stdout and "build.py" not in skipped.stdout
    # Even then the derived configs are written: tritonserver loads them by --model-config-name.
    assert skipped.stdout.startswith(f"python -m emotion_triton.repository --repository {repository}\n")
    # A new version while a server serves: built anyway, on the mounted data (BUILD_DATA_DIR).
    new = run_build_entrypoint(tmp_path, repository, template, BUILD_NEW_VERSION="1", BUILD_DATA_MOUNT="/data")
    assert f"--repository {repository} --data /data" in new.stdout, new.stdout
    rollback = run_build_entrypoint(tmp_path, repository, template, BUILD_MODE="rollback")
    assert f"python -m emotion_triton.commands.rollout --rollback --repository {repository}" in rollback.stdout
    rollout = run_build_entrypoint(tmp_path, repository, template, BUILD_MODE="rollout")
    assert (
        rollout.stdout.strip().splitlines()[-1]
        == f"python -m emotion_triton.commands.rollout --repository {repository}"
    )

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
