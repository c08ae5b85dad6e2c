"""The container's healthcheck against a real saturated tritonserver.

tests/deployment/test_healthcheck.py shows by arithmetic that every probe's timeout outlasts the slowest answer of a
saturated server. Here the CPU deployment's healthcheck (docker-compose.cpu.yml, with the configuration the
CPU container loads: configs/onnx.pbtxt, run rows one at a time) runs as docker runs it, a python3
process, against the local tritonserver serving the same configurations while its classifier queue is
full, and answers "healthy" within its timeout: a busy server is not a broken one.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import tritonclient.grpc as grpcclient

from emotion_triton.repository import CLASSIFIER_CONFIGS
from tests.helpers.compose_yaml import load_compose, merge_compose, seconds
from tests.helpers.deploy_files import COMPOSE_FILE, CPU_COMPOSE_FILE, HEALTHCHECK
from tests.helpers.images import PYTHON_START_SECONDS, canary_worst_case, container_command, flags, load_healthcheck
from tests.helpers.servers import start_server
from tests.helpers.triton_requests import FAMILY, SLOW_TEXT, text_input, variant

FLOOD_REQUESTS = 20_000  # at most, however the checks go
FLOOD_SECONDS = 120  # likewise
QUEUE_FULL = "Exceeds maximum queue size"
QUEUE_TIMEOUT = "Request timeout expired"


class Flood:
    """Requests of 64 slow texts over gRPC, `in_flight` at a time, each answer followed by a new request,
    until stopped (bounded in count and time)."""

    def __init__(self, server, in_flight: int):
        self.client = grpcclient.InferenceServerClient(server.grpc_url)
        self.tensor = text_input(grpcclient, [SLOW_TEXT] * 64)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + FLOOD_SECONDS
        self.sent = self.pending = 0
        self.outcomes: list[tuple[float, str]] = []  # (when it ended, "ok" or the error message)
        for _ in range(in_flight):
            self._send()

    def _send(self) -> None:
        with self.lock:
            if self.stop.is_set() or self.sent >= FLOOD_REQUESTS or time.monotonic() > self.deadline:
                return
            self.sent += 1
            self.pending += 1
        self.client.async_infer("emotion", [self.tensor], callback=self._answered, client_timeout=60)

    def _answered(self, result, error) -> None:
        outcome = "ok" if error is None else (error.message() or str(error))
        self.outcomes.append((time.monotonic(), outcome))
        with self.lock:
            self.pending -= 1
        if QUEUE_FULL in outcome:  # refused at once: a short pause instead of a busy loop
            threading.Timer(0.05, self._send).start()
        else:
            self._send()

    def count(self, answer: str, start: float = 0.0, end: float = float("inf")) -> int:
        return sum(1 for when, outcome in list(self.outcomes) if answer in outcome and start <= when <= end)

    def summary(self) -> str:
        outcomes = list(self.outcomes)
        kinds = {"ok": "ok", QUEUE_FULL: "queue full", QUEUE_TIMEOUT: "queue timeout"}
        counts = {label: sum(1 for _, o in outcomes if key in o) for key, label in kinds.items()}
        return ", ".join(f"{n} {label}" for label, n in counts.items()) + f" of {len(outcomes)}"

    def wait_for(self, answer: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.count(answer):
            assert time.monotonic() < deadline, f"no '{answer}' within {timeout:g} s: {self.summary()}"
            time.sleep(0.1)

    def close(self) -> None:
        """Stops sending and waits for the requests in flight (each ends within the queue timeouts)."""
        self.stop.set()
        deadline = time.monotonic() + 90
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        self.client.close()


def run_check(url: str, argv: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float, float]:
    """healthcheck.py as docker and the kubelet run it: a python3 process, killed at the probe's timeout."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--url", f"http://{url}", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, start, time.monotonic()


@pytest.mark.server
@pytest.mark.parametrize(
    "queue_size, in_flight, saturated",
    [
        (4, 16, QUEUE_FULL),  # a full classifier queue: the canary is refused at once
        (None, 400, QUEUE_TIMEOUT),  # the production queue (512), 400 deep: the canary waits out the timeouts
    ],
    ids=["queue-full", "queue-timeouts"],
)
def test_the_cpu_healthcheck_answers_alive_in_time_on_a_saturated_server(
    built_repository, tmp_path, queue_size, in_flight, saturated
):
    # The CPU container's check and the configuration it serves, read from the compose files.
    service = merge_compose(load_compose(COMPOSE_FILE), load_compose(CPU_COMPOSE_FILE))["services"]["tritonserver"]
    config_name = flags(container_command(service.get("environment"))[1:])["--model-config-name"]
    classifier = [key for key, name in CLASSIFIER_CONFIGS.items() if name == config_name]
    assert classifier, f"the local server cannot serve configs/{config_name}.pbtxt: {CLASSIFIER_CONFIGS}"
    readiness = service["healthcheck"]["test"][3:]  # CMD python3 healthcheck.py ...
    probe_timeout = seconds(service["healthcheck"]["timeout"])
    args = load_healthcheck().parse_args(readiness)
    # Liveness: the same budget, one health call and one canary.
    liveness = [
        "--health=live",
        "--canaries=1",
        f"--canary-timeout={args.canary_timeout:g}",
        f"--timeout={args.timeout:g}",
    ]

    # The production queue timeouts (2 + 4 + 2 s) and a model that runs rows one at a time, so that a
    # flood keeps the classifier saturated.
    source, checkpoint = built_repository(FAMILY)
    repository = variant(source, tmp_path / "repo", checkpoint, max_tokens_per_forward=64, queue_size=queue_size)
    worst = canary_worst_case(repository, config_name)
    assert args.canary_timeout >= worst and probe_timeout >= args.timeout + PYTHON_START_SECONDS

    server = start_server(repository, tmp_path, classifier=classifier[0])
    flood = None
    try:
        idle, _, _ = run_check(server.http_url, readiness, probe_timeout)
        assert idle.returncode == 0 and "4 canaries answered" in idle.stdout, idle.stdout + idle.stderr

        flood = Flood(server, in_flight)
        flood.wait_for(saturated, 60)
        for name, argv in (("liveness", liveness), ("readiness", readiness)):
            queued_before = flood.pending
            result, start, end = run_check(server.http_url, argv, probe_timeout)
            queued = min(queued_before, flood.pending)
            took = end - start
            assert result.returncode == 0 and result.stdout.startswith("healthy:"), f"{name}: {result.stderr}"
            assert took <= args.timeout + PYTHON_START_SECONDS, f"{name} took {took:.1f} s"
            print(f"{name}: {took:.2f} s, {result.stdout.strip()}; {queued} queued; flood: {flood.summary()}")
            # Saturated during the check: the flood's requests were refused for overload within the
            # classifier's queue timeout (4 s) of it, or at least half the flood stayed queued in the
            # server from its start to its end. Refusals come in waves (a full queue refuses a burst,
            # then the deep queues answer within their timeouts), so either can be the sign.
            around = (start - 4.0, end + 4.0)
            overloaded = flood.count(QUEUE_FULL, *around) + flood.count(QUEUE_TIMEOUT, *around)
            assert overloaded or queued >= in_flight // 2, (
                f"{name}: the server was not saturated during the check: {queued} requests queued; {flood.summary()}"
            )
        flood.close()
        time.sleep(1)
        after, _, _ = run_check(server.http_url, readiness, probe_timeout)
        assert after.returncode == 0 and "canaries answered" in after.stdout, after.stdout + after.stderr
        assert any(outcome == "ok" for _, outcome in flood.outcomes), "busy, not broken: the flood got answers too"
    finally:
        if flood is not None:
            flood.close()
        server.stop()
