"""A bounded soak test of the local server: minutes of high load with a share of bad requests.

    python -m emotion_lab.perf.soak [--seconds 120] [--concurrency 12] [--bad-share 0.1] [--repository DIR]

Starts its own tritonserver on free loopback ports (the repository's built model, like
`make serve`), sends the same known texts once alone, then loads it with `--concurrency`
closed-loop clients (gRPC and HTTP, half each) for `--seconds`. A share of the requests is
bad: an empty, whitespace, NUL, non-UTF-8 or over-long text inside a batch, a batch over
`max_batch_size`, a wrong datatype or an unknown model. It checks that

- every request got an answer: no client-side timeout, no dropped connection;
- good requests are answered correctly (one label and a probability row per text) or refused
  as overloaded (503 / UNAVAILABLE), never anything else; bad requests are refused with
  400 / INVALID_ARGUMENT (404 / NOT_FOUND for the unknown model), never answered, and no
  error message carries a traceback, a file path or a shared-memory key;
- the server counted exactly the successes the clients saw (`nv_inference_request_success`);
- resident memory (tritonserver + stubs, sampled every second) peaks at most `--max-rss-growth-mib`
  higher in the second half of the load than in the first (the allocators settle during the
  warm-up and the first half; a leak keeps growing), and the stubs' /dev/shm regions grow by at
  most `--max-shm-growth-mib` after the warm-up;
- the known texts get the same answers after the load as before it (max |difference| 1e-6).

It prints its numbers and exits 1 when a check fails.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from tyro.conf import arg

from emotion_triton.client import EmotionClient
from emotion_triton.client.load import Sent, latency_ms
from emotion_triton.client.load import run as run_load
from emotion_triton.command_line import parse
from emotion_triton.repository import DEFAULT_REPOSITORY
from emotion_triton.serving.local_server import (
    DEFAULT_CLASSIFIER,
    SHM_PREFIX,
    ClassifierName,
    LocalServer,
    ServerOptions,
)
from emotion_triton.serving.preflight import ServerError
from emotion_triton.serving.prometheus import triton_metrics

from .soak_traffic import PROBE_TEXTS, Answer, SoakSender, soak_requests


@dataclass
class SoakOptions:
    """The soak and the server it starts."""

    repository: Path = DEFAULT_REPOSITORY
    """the model repository of the server it starts"""
    classifier: ClassifierName = DEFAULT_CLASSIFIER
    """the classifier variant of the server it starts"""
    seconds: float = 120.0
    """seconds of load after the warm-up"""
    warmup: float = 20.0
    """seconds of load before the memory baseline"""
    concurrency: int = 12
    """clients, half gRPC, half HTTP"""
    bad_share: float = 0.1
    """share of bad requests"""
    max_rss_growth_mib: float = 32.0
    """bound on the peak RSS of the second half of the load over the peak of the first"""
    max_shm_growth_mib: float = 16.0
    """bound on the growth of the stubs' /dev/shm regions after the warm-up"""
    timeout: float = 30.0
    """client deadline per request: an answer later than this counts as lost"""
    seed: int = 0
    log_file: Annotated[Path | None, arg(help_behavior_hint="(default: a temporary file)")] = None
    """tritonserver's log"""


@dataclass
class SoakCommand:
    """emotion-soak's command line: the soak's options, and how to print its numbers."""

    soak: SoakOptions = field(default_factory=SoakOptions)
    json: bool = False
    """also print the numbers as one JSON line"""


@dataclass
class SoakReport:
    seconds: float = 0.0
    requests: int = 0
    texts_answered: int = 0
    outcomes: Counter = field(default_factory=Counter)  # (good|bad, ok|invalid|not_found|overloaded|...)
    latencies: list[float] = field(default_factory=list)  # seconds, answered good requests
    server_successes: int = 0
    rss_start: int = 0  # after the warm-up
    rss_end: int = 0
    rss_peak_first: int = 0  # highest sample of the first half of the load
    rss_peak_second: int = 0  # ... and of the second
    shm_start: int = 0
    shm_end: int = 0
    shm_peak: int = 0
    max_probe_difference: float = 0.0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def percentile(self, q: int) -> float:
        """Seconds: the q-th percentile (50, 95 or 99) of the answered good requests' latencies."""
        latency = latency_ms(self.latencies)
        return latency[f"p{q}"] / 1e3 if latency else float("nan")

    def summary(self) -> list[str]:
        mib = 1 << 20
        counts = ", ".join(f"{kind} {outcome} {n}" for (kind, outcome), n in sorted(self.outcomes.items()))
        lines = [
            f"soak: {self.seconds:.0f} s, {self.requests} requests ({self.requests / max(self.seconds, 1e-9):.0f}/s), "
            f"{self.texts_answered} texts answered ({self.texts_answered / max(self.seconds, 1e-9):.0f}/s)",
            f"  outcomes: {counts}",
            f"  answered good requests: p50 {self.percentile(50) * 1e3:.0f} ms, p99 {self.percentile(99) * 1e3:.0f} ms, "
            f"max {max(self.latencies, default=float('nan')) * 1e3:.0f} ms; server-side successes {self.server_successes}",
            f"  RSS (tritonserver + stubs): {self.rss_start / mib:.0f} MiB after warm-up, peak "
            f"{self.rss_peak_first / mib:.0f} in the first half, {self.rss_peak_second / mib:.0f} in the second "
            f"({(self.rss_peak_second - self.rss_peak_first) / mib:+.1f} MiB), end {self.rss_end / mib:.0f}",
            f"  /dev/shm (stub regions): {self.shm_start / mib:.0f} MiB after warm-up, peak {self.shm_peak / mib:.0f}, "
            f"end {self.shm_end / mib:.0f} ({(self.shm_end - self.shm_start) / mib:+.1f} MiB)",
            f"  known texts before and after: max |score difference| {self.max_probe_difference:.1e}",
        ]
        lines += [f"  VIOLATION: {v}" for v in self.violations[:20]]
        if len(self.violations) > 20:
            lines.append(f"  ... and {len(self.violations) - 20} more violations")
        lines.append("soak: PASSED" if self.ok else "soak: FAILED")
        return lines


def _tally(report: SoakReport, sent: list[Sent]) -> None:
    """Adds the requests that were sent to the report: outcomes, violations, latency of the answered good ones."""
    for request in sent:
        if request.error is not None:  # the sender turns every answer into an Answer: this is a bug of its own
            report.violations.append(f"the soak's sender failed: {type(request.error).__name__}: {request.error}")
            continue
        answer: Answer = request.answer
        report.requests += 1
        report.outcomes[(answer.kind, answer.outcome)] += 1
        if answer.problem:
            report.violations.append(answer.problem)
        elif answer.outcome == "ok":
            report.latencies.append(request.seconds)
            report.texts_answered += request.texts


def _probe(server: LocalServer) -> np.ndarray:
    """Scores of PROBE_TEXTS, one request per text, nothing else in flight."""
    with EmotionClient(server.grpc_url, model=server.ensemble.name) as client:
        return np.array([client.infer([text])[1][0] for text in PROBE_TEXTS])


def _server_successes(server: LocalServer) -> int:
    return int(triton_metrics(server.metrics_url).get(("nv_inference_request_success", server.ensemble.name), 0))


def run(options: SoakOptions, server: LocalServer | None = None) -> SoakReport:
    """Runs the soak against `server` (started and stopped here when None)."""
    own = server is None
    if own:
        log = options.log_file or Path(tempfile.mkdtemp(prefix="emotion-soak-")) / "tritonserver.log"
        server = LocalServer(
            ServerOptions.on_free_ports(
                repository=options.repository,
                classifier=options.classifier,
                log_file=log,
            )
        )
        server.start()
    report = SoakReport()
    try:
        before = _probe(server)
        successes_before = _server_successes(server)
        senders = [SoakSender(i, server, options.timeout) for i in range(options.concurrency)]
        requests = soak_requests(options.bad_share, server.ensemble.name, options.seed)
        sent: list[Sent] = []  # appended by the load generator's thread as each request ends
        load = threading.Thread(
            target=run_load, args=(senders, requests, options.warmup + options.seconds, sent.append), daemon=True
        )
        load.start()
        time.sleep(options.warmup)
        measure_from = time.perf_counter()  # the requests that end before this are the warm-up's
        report.rss_start, report.shm_start = server.memory()
        report.rss_peak_first = report.rss_peak_second = report.rss_start
        report.shm_peak = report.shm_start
        start = time.monotonic()
        while time.monotonic() - start < options.seconds:
            time.sleep(min(1.0, max(0.0, options.seconds - (time.monotonic() - start))))
            rss, shm = server.memory()
            if time.monotonic() - start < options.seconds / 2:
                report.rss_peak_first = max(report.rss_peak_first, rss)
            else:
                report.rss_peak_second = max(report.rss_peak_second, rss)
            report.shm_peak = max(report.shm_peak, shm)
        load.join(options.timeout + 5)
        report.seconds = time.monotonic() - start
        if load.is_alive():
            report.violations.append(f"a client did not finish within {options.timeout + 5:.0f} s of the end")
        else:
            for sender in senders:
                sender.close()
        sent = list(sent)
        warmup = SoakReport()  # its numbers are thrown away, its violations kept
        _tally(warmup, [request for request in sent if request.end < measure_from])
        _tally(report, [request for request in sent if request.end >= measure_from])
        report.violations[:0] = warmup.violations
        report.rss_end, report.shm_end = server.memory()

        answered = warmup.outcomes[("good", "ok")] + report.outcomes[("good", "ok")]
        deadline = time.monotonic() + 5  # Triton counts a success just after it sent the answer
        report.server_successes = _server_successes(server) - successes_before
        while report.server_successes != answered and time.monotonic() < deadline:
            time.sleep(0.1)
            report.server_successes = _server_successes(server) - successes_before
        if report.server_successes != answered:
            report.violations.append(f"the server counted {report.server_successes} successes, the clients {answered}")
        after = _probe(server)
        report.max_probe_difference = float(np.abs(after - before).max())
        if report.max_probe_difference > 1e-6 or (after.argmax(axis=1) != before.argmax(axis=1)).any():
            report.violations.append(f"the known texts changed answers (max |diff| {report.max_probe_difference:.1e})")
        rss_growth = (report.rss_peak_second - report.rss_peak_first) / (1 << 20)
        shm_growth = (report.shm_end - report.shm_start) / (1 << 20)
        if rss_growth > options.max_rss_growth_mib:
            report.violations.append(
                f"resident memory kept growing: its peak rose by {rss_growth:.0f} MiB from the first half of the "
                f"load to the second (bound {options.max_rss_growth_mib:g})"
            )
        if shm_growth > options.max_shm_growth_mib:
            report.violations.append(f"/dev/shm grew by {shm_growth:.0f} MiB (bound {options.max_shm_growth_mib:g})")
        if not report.outcomes[("good", "ok")] or not any(k == "bad" for k, _ in report.outcomes):
            report.violations.append("the load sent no good or no bad requests")
        if not server.canary():
            report.violations.append("the canary fails after the soak")
    finally:
        if own:
            regions = [key for _, stub in server.stubs() for key in stub.cmdline() if key.startswith(SHM_PREFIX)]
            server.stop()
            left = [key for key in regions if Path("/dev/shm", key).exists()]
            if left:
                report.violations.append(f"tritonserver left {len(left)} shared-memory regions in /dev/shm")
    return report


def main(argv: list[str] | None = None) -> int:
    command = parse(SoakCommand, argv, __doc__.split("\n")[0])
    options = command.soak
    print(
        f"soak: {options.warmup:g} s warm-up, then {options.seconds:g} s at {options.concurrency} clients", flush=True
    )
    try:
        report = run(options)
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(report.summary()))
    if command.json:
        numbers = {k: v for k, v in vars(report).items() if k not in ("latencies", "outcomes")}
        numbers["outcomes"] = {f"{k} {o}": n for (k, o), n in report.outcomes.items()}
        numbers["p50_ms"], numbers["p99_ms"] = report.percentile(50) * 1e3, report.percentile(99) * 1e3
        print(json.dumps(numbers))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
