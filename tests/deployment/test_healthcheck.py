"""The container healthcheck (deploy/healthcheck.py) against a fake Triton, and by arithmetic on the
files: every probe's timeout outlasts the slowest answer of a saturated server (the queue timeouts of
the model configs). tests/deployment/test_healthcheck_saturated.py runs it against a real saturated
tritonserver."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from emotion_triton.client import DEFAULT_URLS
from emotion_triton.repository import DEFAULT_REPOSITORY, Ensemble
from emotion_triton.serving import canary
from emotion_triton.serving.preflight import free_port
from tests.helpers.compose_yaml import seconds
from tests.helpers.deploy_files import CANARY_MODULE, HEALTHCHECK, ROOT
from tests.helpers.dockerfiles import third_party_imports
from tests.helpers.fake_triton import GOOD_ANSWER, FakeTriton
from tests.helpers.images import (
    PYTHON_START_SECONDS,
    canary_worst_case,
    container_command,
    flags,
    healthcheck_argv,
    load_healthcheck,
)


@pytest.fixture
def fake_triton():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeTriton)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


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
    kubernetes_config = flags(container_command(triton_container.get("env"))[1:])["--model-config-name"]
    assert kubernetes_config == "gpu", "Kubernetes serves the production configs (and the served version's pins)"
    for probe, liveness in (("readinessProbe", False), ("livenessProbe", True)):
        settings = triton_container[probe]
        argv = healthcheck_argv(settings["exec"]["command"])
        probes.append((f"deployment.yaml {probe}", argv, settings["timeoutSeconds"], kubernetes_config, liveness))
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
