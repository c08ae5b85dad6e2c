"""The deployment, run for real: the README's CPU-host command on the stand-in base images.

`docker compose -f docker-compose.yml -f docker-compose.cpu.yml up -d tritonserver` in a copy of the
checkout with no model, as a user runs it: both images built from the project's Dockerfiles, the
`build` service exporting a fine-tuned checkpoint from a host folder (BUILD_CHECKPOINT_DIR; a tiny
model here), tritonserver healthy under its own healthcheck, then clients from the host over the
published ports. The base images are the CPU stand-ins of docker/stand-in/ (`make containers`):
Triton 2.51 on Debian where NVIDIA's image has 2.62 on Ubuntu, no CUDA (docs/deploy.md, "What is
tested here, and how"). Every port is published on 127.0.0.1 only.

The tests share one deployment and run in this file's order; each leaves it serving.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from emotion_lab.containers import ComposeProject, EngineUnavailable, ensure_compose, ensure_engine
from emotion_lab.containers.cpu_host import CPU_HOST_FILES, PORTS
from emotion_lab.containers.cpu_host import CpuHostDeployment as Deployment
from emotion_lab.containers.stand_ins import StandInError, ensure_stand_ins
from emotion_lab.perf.container_bench import CONTAINER_CLIENTS, against_local, container_summary, container_table
from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.build.training import training_arguments
from emotion_triton.client import ClientError, EmotionClient
from emotion_triton.data import read_file
from emotion_triton.repository import CLASSIFIER_CONFIGS, Ensemble, copy_sources
from emotion_triton.serving.local_server import DEFAULT_CLASSIFIER
from emotion_triton.serving.preflight import free_ports
from tests.helpers.checkout import git_checkout, git_status
from tests.helpers.compose_yaml import seconds
from tests.helpers.rollout import PROBES, ClosedLoop, install_copy, single_label_data, skew_classifier_bias
from tests.helpers.servers import start_server

PROJECT = Path(__file__).resolve().parents[2]
TEXTS = ["i feel wonderful today", "this is terrifying", "i miss her so much", "why would you do that to me"]
SCORE_TOLERANCE = 1e-4
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def engine():
    """A Docker engine, Compose v2 and the stand-ins (`make containers`), or the reason there are none.

    CI sets EMOTION_TRITON_REQUIRE_CONTAINERS=1 (.ci/run): there a missing engine fails instead."""
    try:
        ensure_engine()
        ensure_compose()
        ensure_stand_ins()
    except (EngineUnavailable, StandInError) as error:
        if os.environ.get("EMOTION_TRITON_REQUIRE_CONTAINERS") == "1":
            pytest.fail(f"containers required (EMOTION_TRITON_REQUIRE_CONTAINERS=1): {error}")
        pytest.skip(f"no container engine here: {error}")


@pytest.fixture(scope="module")
def deployment(engine, built_repository, tmp_path_factory):
    _, checkpoint = built_repository("distilbert")
    checkout = git_checkout(tmp_path_factory.mktemp("user") / "emotion-triton")
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    deployed = Deployment(checkout, checkpoint, f"emotion-triton-test-{secrets.token_hex(3)}", ports)
    try:
        yield deployed
    finally:  # the images stay (emotion-triton/*:local, a user's tags): the next run builds nothing
        deployed.compose.down()


def classify(url: str, protocol: str, *texts: str) -> list[dict]:
    """client/classify.py --json, as a user runs it."""
    command = [sys.executable, str(PROJECT / "client" / "classify.py"), "--url", url, "--protocol", protocol, "--json"]
    result = subprocess.run(
        [*command, *(option for text in texts for option in ("--text", text))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def evaluate(url: str, protocol: str, data: Path, *options: str) -> dict:
    """client/evaluate.py --json, as a user runs it."""
    command = [sys.executable, str(PROJECT / "client" / "evaluate.py"), str(data), "--url", url, "--protocol", protocol]
    result = subprocess.run([*command, "--json", *options], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def assert_same_answers(served: list[dict], local: list[dict]) -> float:
    """Same labels in the same order and every score within SCORE_TOLERANCE; the largest difference."""
    largest = 0.0
    assert len(served) == len(local)
    for ours, theirs in zip(served, local, strict=True):
        assert [s["label"] for s in ours] == [s["label"] for s in theirs]
        largest = max([largest, *(abs(a["score"] - b["score"]) for a, b in zip(ours, theirs, strict=True))])
    assert largest <= SCORE_TOLERANCE, largest
    return largest


def test_the_cpu_host_command_builds_the_model_and_serves_what_the_local_server_serves(
    deployment, small_data, tmp_path
):
    """The README's CPU-host command on a checkout with no model, then the clients from the host."""
    compose = deployment.compose
    repository = deployment.checkout / "model_repository"
    assert not [*repository.glob("*/1/model.pt"), *repository.glob("*/1/model.onnx")], "the checkout has no model"
    started = time.monotonic()
    # A user's first `up` builds the images; here they may exist from an earlier run, so the current
    # Dockerfiles are built first (layers cached by docker: seconds when nothing changed).
    compose.run("build", timeout=1500)
    built = time.monotonic() - started
    up = compose.run("up", "-d", "tritonserver", check=False, timeout=900)
    assert up.returncode == 0, f"{up.stderr[-1000:]}\nbuild service: {compose.run('logs', 'build').stdout[-3000:]}"
    up_seconds = time.monotonic() - started - built
    healthy = deployment.healthy()
    print(
        f"compose build: {built:.0f} s; up -d: {up_seconds:.0f} s (the build service's export); healthy {healthy:.0f} s later"
    )
    build_log = compose.run("logs", "build").stdout
    assert "exporting the checkpoint in /checkpoint (BUILD_CHECKPOINT_DIR)" in build_log, build_log[-2000:]
    for built in ("emotion_classifier/1/model.pt", "emotion_tokenizer/1/tokenizer.json"):
        assert (repository / built).stat().st_size > 0, f"the build service wrote {built}"
    overrides = {f"?? {name}" for name in compose.files if name not in CPU_HOST_FILES}
    assert set(git_status(deployment.checkout)) == overrides, "what the build service wrote is ignored by git"

    # The local server (make serve's code) on the same model files, with the same classifier config.
    local = start_server(repository, tmp_path)  # make serve's default classifier, the container's config
    try:
        for protocol, url in (("grpc", deployment.grpc_url), ("http", deployment.http_url)):
            served = classify(url, protocol, *TEXTS)
            expected = classify(local.grpc_url, "grpc", *TEXTS)
            print(f"classify over {protocol}: largest score difference {assert_same_answers(served, expected):.2e}")
        data = small_data / "validation.txt"
        reference = evaluate(local.grpc_url, "grpc", data)
        for protocol, url in (("grpc", deployment.grpc_url), ("http", deployment.http_url)):
            report = evaluate(url, protocol, data)
            assert report["answered"] == report["texts"] == reference["answered"]
            assert report["metrics"]["accuracy"] == reference["metrics"]["accuracy"]
            pairs = list(zip(report["predictions"], reference["predictions"], strict=True))
            assert all(ours["predicted"] == theirs["predicted"] for ours, theirs in pairs)
            largest = max(
                abs(a - b) for ours, theirs in pairs for a, b in zip(ours["scores"], theirs["scores"], strict=True)
            )
            assert largest <= SCORE_TOLERANCE, largest
            accuracy = report["metrics"]["accuracy"]
            print(
                f"evaluate over {protocol}: {report['texts']} texts, accuracy {accuracy:.4f}, largest diff {largest:.2e}"
            )
    finally:
        local.stop()


def test_the_benchmark_measures_the_container_and_the_local_server_in_turns(deployment, small_data, tmp_path):
    """make bench's container phase on this deployment: both servers answer every request at each
    concurrency, and the ratios of the issue's bound (within 10% of the local server) are computed."""
    deployment.serving()
    local = start_server(deployment.checkout / "model_repository", tmp_path)
    try:
        texts = read_file(small_data / "validation.txt").texts
        points = against_local(deployment, local, texts, seconds=0.5)
    finally:
        local.stop()
    assert [(p["system"], p["concurrency"]) for p in points] == [
        (system, clients) for clients in CONTAINER_CLIENTS for system in ("local", "container")
    ]
    assert all(p["errors"] == 0 and p["texts"] > 0 for p in points), points
    summary = container_summary({"points": points})
    for clients in CONTAINER_CLIENTS:
        by_system = {p["system"]: p for p in points if p["concurrency"] == clients}
        ratio = by_system["container"]["texts_per_second"] / by_system["local"]["texts_per_second"]
        assert summary[f"container_vs_local_c{clients}_texts_per_second"] == pytest.approx(ratio)
    assert "| container | 16 |" in container_table({"up_seconds": 1.0, "points": points})
    print({key: round(value, 3) for key, value in summary.items()})


def test_a_second_up_rebuilds_and_restarts_nothing(deployment):
    compose = deployment.compose
    before = {service: compose.inspect(service) for service in ("build", "tritonserver")}
    started = time.monotonic()
    result = compose.run("up", "-d", "tritonserver")
    seconds = time.monotonic() - started
    after = {service: compose.inspect(service) for service in ("build", "tritonserver")}
    print(f"second up -d: {seconds:.1f} s; compose said: {' | '.join(result.stderr.strip().splitlines()[-4:])}")
    for service in before:
        assert after[service]["Id"] == before[service]["Id"], f"{service} was recreated"
        assert after[service]["Image"] == before[service]["Image"], f"{service}'s image was rebuilt"
    assert after["tritonserver"]["State"]["StartedAt"] == before["tritonserver"]["State"]["StartedAt"]
    assert "Building" not in result.stderr + result.stdout
    assert deployment.compose.health("tritonserver") == "healthy"


def http_status(url: str, method: str = "GET", path: str = "/", headers: dict | None = None, body: bytes = b""):
    request = urllib.request.Request(f"http://{url}{path}", data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def assert_restricted(url: str, key: str) -> None:
    """The model-repository API (one of the restricted ones) refuses without the admin key, opens with it."""
    refused, message = http_status(url, "POST", "/v2/repository/index")
    assert refused == 403 and b"admin-key" in message, (refused, message)
    wrong, _ = http_status(url, "POST", "/v2/repository/index", {"admin-key": "not-the-key"})
    assert wrong == 403
    opened, index = http_status(url, "POST", "/v2/repository/index", {"admin-key": key})
    assert opened == 200 and {"emotion", "emotion_classifier"} <= {m["name"] for m in json.loads(index)}


def test_the_running_container_is_hardened(deployment):
    deployment.serving()
    compose = deployment.compose
    container = compose.inspect("tritonserver")
    host = container["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ShmSize"] == 1 << 30
    (models,) = [mount for mount in container["Mounts"] if mount["Destination"] == "/models"]
    assert models["RW"] is False
    status = compose.exec("tritonserver", "cat", "/proc/1/status").stdout
    fields = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.MULTILINE))
    assert fields["Uid"].split()[0] == "1000" and fields["CapEff"] == "0000000000000000", fields
    assert fields["NoNewPrivs"] == "1"
    pid1 = compose.exec("tritonserver", "cat", "/proc/1/cmdline").stdout.split("\0")
    assert (
        pid1[0].endswith("tritonserver") and f"--model-config-name={CLASSIFIER_CONFIGS[DEFAULT_CLASSIFIER]}" in pid1
    ), pid1
    denied = compose.exec("tritonserver", "touch", "/models/written-by-the-server", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert_restricted(deployment.http_url, deployment.admin_key)
    print(f"uid 1000, CapEff 0, NoNewPrivs 1, shm {host['ShmSize']} B, /models read-only; pid 1: {pid1[0]}")


def test_the_admin_key_file_opens_the_restricted_apis(deployment, tmp_path):
    """TRITON_ADMIN_KEY_FILE (a docker secret), instead of TRITON_ADMIN_KEY, as docs/deploy.md shows it."""
    compose = deployment.compose
    key = secrets.token_urlsafe(18)
    secret = tmp_path / "admin-key"
    secret.write_text(key)
    override = deployment.checkout / "docker-compose.secret.yml"
    override.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "tritonserver": {
                        "secrets": ["triton_admin_key"],
                        "environment": {"TRITON_ADMIN_KEY_FILE": "/run/secrets/triton_admin_key"},
                    }
                },
                "secrets": {"triton_admin_key": {"file": str(secret)}},
            }
        )
    )
    with_secret = ComposeProject(
        compose.directory, (*compose.files, override.name), compose.name, {**compose.env, "TRITON_ADMIN_KEY": ""}
    )
    try:
        with_secret.run("up", "-d", "tritonserver")
        deployment.compose.wait_for_health("tritonserver", "healthy", 300)
        assert_restricted(deployment.http_url, key)
        refused, _ = http_status(
            deployment.http_url, "POST", "/v2/repository/index", {"admin-key": deployment.admin_key}
        )
        assert refused == 403, "the environment's key no longer opens them"
    finally:
        compose.run("up", "-d", "tritonserver")  # back to the deployment's own settings
        deployment.healthy()


PROMETHEUS_GPU_METRICS = ("nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes")


def prometheus_query(port: int, expression: str) -> list:
    query = urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=10) as answer:
        document = json.load(answer)
    assert document["status"] == "success", document
    return document["data"]["result"]


def dashboard_queries() -> list[str]:
    dashboard = json.loads((PROJECT / "docker" / "grafana" / "dashboards" / "emotion-triton.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []) if "expr" in target]


def adapter_query() -> str:
    """prometheus-adapter's metricsQuery, its templates filled the way the adapter fills them, with the
    labels compose's Prometheus has (the job and instance; Kubernetes adds namespace and pod)."""
    values = yaml.safe_load((PROJECT / "deploy" / "k8s" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    return rule["metricsQuery"].replace("<<.LabelMatchers>>", 'job="tritonserver"').replace("<<.GroupBy>>", "instance")


def test_prometheus_of_the_monitoring_profile_answers_every_dashboard_and_autoscaler_query(deployment):
    """Debian's prometheus stands in for the prom/prometheus image, with the project's prometheus.yml."""
    deployment.serving()
    compose = deployment.compose
    compose.run("--profile", "monitoring", "up", "-d", "prometheus")
    port = deployment.ports["PROMETHEUS_PORT"]
    with EmotionClient(deployment.grpc_url) as client:
        deadline = time.monotonic() + 25  # a short load, over several of prometheus.yml's 5 s scrapes
        while time.monotonic() < deadline:
            client.classify(TEXTS * 8)
        queries = [expression.replace("$__rate_interval", "1m") for expression in dashboard_queries()]
        deadline = time.monotonic() + 30  # until a scrape after the load is in
        while not prometheus_query(port, queries[0]) and time.monotonic() < deadline:
            time.sleep(1)
        results = {expression: prometheus_query(port, expression) for expression in [*queries, adapter_query()]}
        answered = {expression: result for expression, result in results.items() if result}
        empty = sorted(set(results) - set(answered))
    print(f"{len(answered)} queries answered; without data: {empty}")
    # No GPU here: the GPU panels alone have nothing to show (Triton exports no nv_gpu_* metric).
    assert all(any(metric in expression for metric in PROMETHEUS_GPU_METRICS) for expression in empty), empty
    (texts,) = answered[queries[0]]
    assert float(texts["value"][1]) > 0, "texts/s under load"
    (queue,) = answered[adapter_query()]
    assert float(queue["value"][1]) > 0, "the autoscaler's signal: the classifier's queue time per request"


def python_stubs(compose: ComposeProject, model: str) -> list[int]:
    """Process ids of the Python backend stubs of one model, inside the container."""
    listing = compose.exec(
        "tritonserver",
        "python3",
        "-c",
        "import os\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try: line = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
        "    except OSError: continue\n"
        "    if line[0].endswith(b'triton_python_backend_stub'): print(pid, line[1].decode())\n",
    ).stdout
    return [int(pid) for pid, path in (line.split() for line in listing.splitlines()) if f"/{model}/" in path]


def compose_config(compose: ComposeProject) -> dict:
    """The merged, interpolated model, as `docker compose config` prints it."""
    return yaml.safe_load(compose.run("config", "--format", "yaml").stdout)


def healthcheck_bound(compose: ComposeProject) -> float:
    """docs/deploy.md: a broken ensemble is `unhealthy` within interval x (retries + 1) + timeout."""
    check = compose_config(compose)["services"]["tritonserver"]["healthcheck"]
    return seconds(check["interval"]) * (check["retries"] + 1) + seconds(check["timeout"])


def test_a_dead_python_stub_makes_the_container_unhealthy_and_restart_recovers(deployment):
    deployment.serving()
    compose = deployment.compose
    bound = healthcheck_bound(compose)
    stubs = python_stubs(compose, "emotion_postprocess")
    assert stubs, "the postprocess has stubs"
    killed = time.monotonic()
    compose.exec("tritonserver", "python3", "-c", f"import os; [os.kill(pid, 9) for pid in {stubs}]")
    unhealthy = compose.wait_for_health("tritonserver", "unhealthy", bound + 10)
    ready, _ = http_status(deployment.http_url, path="/v2/health/ready")
    assert compose.inspect("tritonserver")["State"]["Status"] == "running", "docker does not restart it"
    with EmotionClient(deployment.grpc_url, retries=0) as client, pytest.raises(ClientError) as answer:
        client.classify(["still there?"])  # the broken ensemble does not answer
    print(
        f"killed {len(stubs)} postprocess stubs: unhealthy after {unhealthy:.0f} s (bound {bound:.0f} s); "
        f"/v2/health/ready said {ready}; the text got: {answer.value}"
    )
    restarted = time.monotonic()
    compose.run("restart", "tritonserver")
    recovered = deployment.healthy()
    with EmotionClient(deployment.grpc_url) as client:
        assert all(p.label for p in client.classify(TEXTS))
    print(
        f"docker compose restart: healthy {time.monotonic() - restarted:.0f} s later ({recovered:.0f} s of it waiting)"
    )
    assert time.monotonic() - killed < 600


def load_through_stop(deployment: Deployment, keep_sending: bool) -> tuple[list, float, float]:
    """Eight clients (gRPC and HTTP) send 64-text requests in a closed loop; `docker compose stop` comes
    3 s in. With `keep_sending`, they go on until the container has exited; else each stops after
    the request it has in flight, and closes its connection (what a load balancer's draining does).
    Returns (records: (start, end, outcome) per request, the time of the stop, its duration)."""
    records, draining, stopped = [], threading.Event(), threading.Event()

    def client_loop(protocol: str) -> None:
        url = deployment.grpc_url if protocol == "grpc" else deployment.http_url
        with EmotionClient(url, protocol, retries=0, timeout=60) as client:
            while not stopped.is_set() and not (draining.is_set() and not keep_sending):
                begin = time.monotonic()
                try:
                    answers = client.classify(TEXTS * 16)
                    outcome = "answered" if all(p.label for p in answers) else next(p.error for p in answers if p.error)
                except Exception as error:  # recorded: refused connections after the stop are expected
                    outcome = f"{type(error).__name__}: {str(error)[:80]}"
                records.append((begin, time.monotonic(), outcome))

    threads = [threading.Thread(target=client_loop, args=(p,)) for p in ("grpc", "http") * 4]
    for thread in threads:
        thread.start()
    time.sleep(3)
    signalled = time.monotonic()
    draining.set()
    deployment.compose.run("stop", "tritonserver", timeout=120)
    duration = time.monotonic() - signalled
    stopped.set()
    for thread in threads:
        thread.join(90)
    return records, signalled, duration


def test_stop_under_load_answers_the_requests_in_flight_and_exits_within_the_grace_period(deployment):
    """docs/deploy.md, "Stopping under load": what `docker compose stop` does to requests, measured."""
    deployment.serving()
    compose = deployment.compose
    grace = seconds(compose_config(compose)["services"]["tritonserver"]["stop_grace_period"])
    for keep_sending in (False, True):
        records, signalled, duration = load_through_stop(deployment, keep_sending)
        state = compose.inspect("tritonserver")["State"]
        before = [outcome for begin, _, outcome in records if begin < signalled]
        in_flight = [outcome for begin, end, outcome in records if begin < signalled < end]
        after = Counter(outcome for begin, _, outcome in records if begin >= signalled)
        print(
            f"stop with clients {'sending on' if keep_sending else 'draining'}: {duration:.1f} s "
            f"(stop_grace_period {grace:.0f} s), exit code {state['ExitCode']}; {len(in_flight)} requests in "
            f"flight, {Counter(in_flight)}; sent after the stop: {dict(after)}"
        )
        assert in_flight and set(before) == {"answered"}, Counter(before)  # every request in flight answered
        assert duration < grace and state["ExitCode"] != 137, "stopped by Triton itself, never by docker's SIGKILL"
        if not keep_sending:
            assert state["ExitCode"] == 0
        compose.run("start", "tritonserver")
        print(f"start: healthy after {deployment.healthy():.0f} s")


def test_the_gpu_file_alone_on_a_host_without_a_gpu_fails_with_docker_s_device_error(deployment):
    """docker-compose.yml without docker-compose.cpu.yml: the error docs/deploy.md quotes."""
    gpu_only = ComposeProject(
        deployment.checkout,
        tuple(name for name in deployment.compose.files if name != "docker-compose.cpu.yml"),
        f"{deployment.compose.name}-gpu",
        deployment.compose.env,
    )
    try:
        result = gpu_only.run("up", "-d", "tritonserver", check=False, timeout=600)
    finally:
        gpu_only.down()
    assert result.returncode != 0
    assert 'could not select device driver "nvidia" with capabilities: [[gpu]]' in result.stderr, result.stderr


def test_a_new_model_rolls_out_and_back_through_the_build_service_under_load(
    deployment, tiny_base, small_data, validation_texts, tmp_path
):
    """docs/deploy.md's container roll-out: `BUILD_NEW_VERSION=1 docker compose run --rm build` installs
    a new version beside the served one and ends with its checked roll-out through tritonserver's
    model-control API (the admin key); BUILD_MODE=rollback serves the version before again. A
    closed-loop load from the host meanwhile: no request fails, the answers switch both ways."""
    deployment.serving()
    repository = deployment.checkout / "model_repository"
    ensemble = Ensemble.read(repository)
    texts = validation_texts[:PROBES]
    with EmotionClient(deployment.grpc_url) as client:
        old = tuple(client.infer(texts)[0])
    # A checkpoint that answers a label the served model gives none of the probe texts.
    new_label = next(label for label in ensemble.labels if label not in old)
    data = single_label_data(small_data, tmp_path / "data", new_label)
    recipe = {"max_steps": 12, "per_device_train_batch_size": 16, "learning_rate": 1e-2, "num_train_epochs": 1}
    options = BuildOptions(
        base_model=str(tiny_base("distilbert")),
        data=str(data),
        repository=copy_sources(tmp_path / "scratch_repository"),
        labels=ensemble.labels,
    )
    build(options, training_arguments(tmp_path / "run", **recipe))
    compose = replace(
        deployment.compose,
        env={
            **deployment.compose.env,
            "BUILD_CHECKPOINT_DIR": str(tmp_path / "run" / "checkpoint"),
            "BUILD_DATA_DIR": str(data),
        },
    )
    served = ensemble.served_version

    with ClosedLoop(deployment.grpc_url, texts) as load:
        time.sleep(1.0)
        started = time.monotonic()
        rollout = compose.run("run", "--rm", "-T", "-e", "BUILD_NEW_VERSION=1", "build", check=False, timeout=900)
        rolled_out = time.monotonic()
        assert rollout.returncode == 0, rollout.stderr[-3000:]
        (version,) = re.findall(r"version (\d+) serves \(was (?:\d+)\)", rollout.stdout + rollout.stderr)
        assert int(version) > served and ensemble.served_version == int(version)
        time.sleep(1.5)
        rolling_back = time.monotonic()
        rollback = compose.run("run", "--rm", "-T", "-e", "BUILD_MODE=rollback", "build", check=False, timeout=300)
        rolled_back = time.monotonic()
        assert rollback.returncode == 0, rollback.stderr[-3000:]
        assert f"version {served} serves again (was {version})" in rollback.stdout + rollback.stderr
        time.sleep(1.5)
    ended = time.monotonic()

    assert not load.errors, f"{len(load.errors)} of {len(load.errors) + len(load.answers)} failed: {load.errors[:3]}"
    new = (new_label,) * PROBES
    assert load.between(0, started) == {old}
    assert load.between(started, ended) <= {old, new}, "one model's answers or the other's, never a mix"
    assert load.between(rolled_out + 0.5, rolling_back) == {new}, "after the roll-out: the new model's"
    assert load.between(rolled_back + 0.5, ended) == {old}, "after the rollback: the old model's again"
    assert ensemble.served_version == served and deployment.compose.health("tritonserver") == "healthy"
    print(
        f"\n{len(load.answers)} requests in {ended - started + 1:.1f} s, none failed; build + roll-out "
        f"{rolled_out - started:.1f} s, rollback {rolled_back - rolling_back:.1f} s (each with its container's start)"
    )

    # Broken versions, rolled out by BUILD_MODE=rollout: refused in one line, the old one keeps answering.
    with ClosedLoop(deployment.grpc_url, texts) as load:
        sample = ensemble.report(int(version))["rollout_check"]
        rare = min(range(len(ensemble.labels)), key=lambda i: sample["labels"].count(ensemble.labels[i]))
        wrong = install_copy(ensemble, source=int(version))  # far below its report's accuracy
        skew_classifier_bias(ensemble.served_file("onnx", wrong), rare)
        refused = compose.run("run", "--rm", "-T", "-e", "BUILD_MODE=rollout", "build", check=False, timeout=300)
        assert refused.returncode == 1, refused.stdout[-2000:]
        assert re.search(rf"roll-out refused: version {wrong} scored [0-9.]+% on its \d+-text", refused.stderr), (
            refused.stderr
        )
        corrupt = install_copy(ensemble)
        onnx_file = ensemble.served_file("onnx", corrupt)
        onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
        broken = compose.run("run", "--rm", "-T", "-e", "BUILD_MODE=rollout", "build", check=False, timeout=300)
        assert broken.returncode == 1, broken.stdout[-2000:]
        assert f"roll-out refused: version {corrupt} cannot be loaded: " in broken.stderr, broken.stderr
        time.sleep(0.5)
    assert not load.errors, f"{len(load.errors)} of {len(load.errors) + len(load.answers)} failed: {load.errors[:3]}"
    assert {labels for _, labels in load.answers} == {old}, "the served version answered every request"
    assert wrong not in ensemble.versions() and corrupt not in ensemble.versions()
    print(f"{len(load.answers)} requests during two refused roll-outs, none failed, all answered by version {served}")
    print(refused.stderr.strip()[:200], broken.stderr.strip()[:200], sep="\n")
