"""docker-compose.yml and its CPU-host override, checked without a Docker engine: the compose
specification's schema, the pinned NGC release and images, the GPU reservations the override drops,
mounts, ports (the client's defaults), the server's settings, the Grafana dashboard, and the deploy
docs' files and GPU floor."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import promql_parser
import yaml

from emotion_triton.client import DEFAULT_URLS
from emotion_triton.repository import CLASSIFIER_CONFIGS, DEFAULT_REPOSITORY, VARIANTS, Ensemble, parse_config
from emotion_triton.serving import local_server as server
from emotion_triton.serving.local_server import DEFAULT_CLASSIFIER
from emotion_triton.serving.tritonserver_flags import DEVICE_VARIABLE
from tests.helpers.compose_yaml import (
    Reset,
    compose_schema,
    gpu_requests,
    interpolate,
    load_compose,
    merge_compose,
    seconds,
)
from tests.helpers.deploy_files import (
    BUILD_DOCKERFILE,
    CANARY_MODULE,
    COMPOSE_FILE,
    CPU_COMPOSE_FILE,
    ROOT,
    SERVING_DOCKERFILE,
)
from tests.helpers.dockerfiles import container_copy, dockerfile_instructions, dockerfile_value
from tests.helpers.images import (
    classifier_config_names,
    container_command,
    container_healthcheck_path,
    flags,
    image_repository,
    loaded_config,
    size_bytes,
)
from tests.helpers.kubernetes import k8s_object

MINIMUM_RELEASE = (25, 10)  # older releases are affected by the 2025 security bulletins


# The floor of each NVIDIA release, from its Triton release notes ("Driver Requirements", "GPU
# Requirements"): CUDA version, driver branch, compute capability.
GPU_FLOOR = {"25.10": ("CUDA 13.0", "R575", "7.5")}


def container_commands(compose, cpu_compose, triton_container) -> dict[str, list[str]]:
    return {
        "docker-compose.yml": container_command(compose["services"]["tritonserver"].get("environment")),
        "docker-compose.cpu.yml": container_command(cpu_compose["services"]["tritonserver"].get("environment")),
        "deploy/k8s/deployment.yaml": container_command(triton_container.get("env")),
    }


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
    assert gpu_flags.pop("--model-config-name") == VARIANTS["production"].config_name
    assert cpu_flags.pop("--allow-gpu-metrics") == "false" and gpu_flags.pop("--allow-gpu-metrics") == "true"
    assert cpu_flags == gpu_flags, "every other flag is the GPU service's"
    assert config_name == CLASSIFIER_CONFIGS[DEFAULT_CLASSIFIER], "the container serves what `make serve` serves"
    # A roll-out by the build service loads the file of the classifier variant the server runs.
    gpu_variant = compose["services"]["build"]["environment"]["EMOTION_TRITON_CLASSIFIER"]
    cpu_variant = cpu_compose["services"]["build"]["environment"]["EMOTION_TRITON_CLASSIFIER"]
    production = parse_config(DEFAULT_REPOSITORY / "emotion_classifier" / "config.pbtxt")
    assert gpu_variant == "production" and VARIANTS[gpu_variant].served_file == production.default_model_filename
    assert production.platform == "pytorch_libtorch"
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
        # written by the build, a server or a roll-out (derived configs, the repository's state)
        built = ("model.pt", "tokenizer.json", ".versions.json", "configs/cpu.pbtxt", "configs/onnx.pbtxt")
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
