"""The local server: the real `tritonserver` of the nvidia-pytriton wheel, on the CPU, on loopback.

    python -m emotion_triton.commands.serve [--http-port 8000] [--grpc-port 8001] [--metrics-port 8002]

It checks what it needs first (libpython, free ports, a built and loadable
model, the native backend its classifier needs), starts tritonserver with a CPU configuration of
the classifier (`--classifier libtorch`: the production config.pbtxt on CPU
instances, `--model-config-name=cpu`; `--classifier onnx`: model.onnx on ONNX Runtime in a
Python-backend model, `--model-config-name=onnx`; the default is DEFAULT_CLASSIFIER of
emotion_triton.repository.variants),
waits until the ensemble answers a real inference, and then keeps checking
that it does (an inference canary every `--canary-interval` seconds: Triton
2.51 keeps reporting "ready" when a Python-backend stub has died).
`--canary-failures` failed canaries in a row, or tritonserver exiting, restart
tritonserver; more than `--max-restarts` restarts within ten minutes end the
process with exit code 1. SIGINT and SIGTERM stop it cleanly: tritonserver
stops taking new requests at once and finishes those in flight within
`--exit-timeout`.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tyro.conf import Suppress

from ..command_line import parse
from ..errors import EmotionTritonError
from ..repository import VARIANTS, Ensemble
from .local_server import LocalServer, ServerOptions
from .preflight import ServerError

RESTART_GRACE = 5.0  # seconds a broken tritonserver gets to stop before SIGKILL when it is restarted


@dataclass
class Supervision:
    """How tritonserver is kept answering: an inference canary, and restarts."""

    canary_interval: float = 5.0
    """seconds between two canary inferences"""
    canary_failures: int = 2
    """failed canaries in a row that restart tritonserver"""
    canary_timeout: float = 10.0
    """seconds the canary waits for its answer"""
    max_restarts: int = 3
    """restarts within 10 minutes before the server gives up with exit code 1"""
    restart_window: Suppress[float] = 600.0  # the "10 minutes" of --max-restarts' help: not an option


@dataclass
class ServeCommand:
    """emotion-serve's command line: the server's options and the supervision's, without prefixes."""

    server: ServerOptions = field(default_factory=ServerOptions)
    supervision: Supervision = field(default_factory=Supervision)


def serve_forever(server: LocalServer, supervision: Supervision | None = None) -> int:
    """Runs until SIGINT/SIGTERM (exit 0) or until tritonserver cannot be kept serving (exit 1).

    With the fields of `supervision`: every `canary_interval` seconds one text goes through the ensemble
    (`LocalServer.health_problem`). `canary_failures` failures without `canary_failures` successes in a
    row between them, or tritonserver exiting, restart it; the restart after `max_restarts` restarts
    within `restart_window` seconds ends the process instead. Successes in a row, not one success, clear
    the count: with two instances of a step and one dead stub, every other canary succeeds.
    """
    supervision = supervision or Supervision()
    canary_interval, canary_failures = supervision.canary_interval, supervision.canary_failures
    max_restarts, restart_window = supervision.max_restarts, supervision.restart_window
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)
        server.terminate()  # new HTTP connections are refused now, not after the current canary

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    restarts: list[float] = []  # when the recent restarts happened
    failures = successes = 0
    next_check = time.monotonic() + canary_interval
    while not stopping:
        time.sleep(max(0.0, min(0.2, next_check - time.monotonic())))
        exited = server.process.poll() is not None
        if stopping or (not exited and time.monotonic() < next_check):
            continue
        next_check = time.monotonic() + canary_interval
        problem = server.health_problem(supervision.canary_timeout)
        if stopping:
            break
        if problem is None:
            successes += 1
            if successes >= canary_failures:
                failures = 0
            continue
        failures, successes = failures + 1, 0
        if not exited:  # every failure is printed, the one that triggers a restart too
            print(f"canary failed ({failures}/{canary_failures}): {problem}", file=sys.stderr)
        if failures < canary_failures and not exited:
            continue
        now = time.monotonic()
        restarts = [when for when in restarts if now - when < restart_window]
        if len(restarts) >= max_restarts:
            print(
                f"error: the ensemble stopped answering ({problem}) and {len(restarts)} restarts within "
                f"{restart_window:.0f} s did not help: {server.log_summary()}",
                file=sys.stderr,
            )
            server.stop(RESTART_GRACE, drain=False)
            return 1
        restarts.append(now)
        print(
            f"the ensemble stopped answering ({problem}); restarting tritonserver ({len(restarts)}/{max_restarts})",
            file=sys.stderr,
            flush=True,
        )
        server.stop(RESTART_GRACE, drain=False)  # requests in flight fail anyway: a step of the ensemble is broken
        try:
            server.start()
        except ServerError as error:
            if stopping:
                break
            print(f"error: {error}", file=sys.stderr)
            return 1
        print("tritonserver restarted: the ensemble answers again", file=sys.stderr, flush=True)
        failures = 0
        next_check = time.monotonic() + canary_interval
    return stop_cleanly(server)


def stop_cleanly(server: LocalServer) -> int:
    """The normal end of a serving server (SIGINT/SIGTERM): requests in flight complete; exit code 0."""
    print("stopping tritonserver (requests in flight complete first)", flush=True)
    code = server.stop()
    print(f"tritonserver stopped (exit code {code})", flush=True)
    return 0


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, prepare: Callable[[Ensemble], None] | None = None) -> int:
    """The supervised local server; `prepare` runs once before the first start (the serve command builds a
    missing model there: this layer never imports the build)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = parse(ServeCommand, argv, "Serve the emotion ensemble with a local tritonserver on the CPU.")
    options = command.server
    server = LocalServer(options)
    print(f"starting tritonserver on {options.host} (log: {server.log_file})", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM while starting stops tritonserver too
    try:
        if prepare is not None:
            prepare(server.ensemble)
        server.start()
    except EmotionTritonError as error:  # a ServerError, or what `prepare` (the serve command's build) raises
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        server.stop()
        return 130
    try:
        print(
            f"serving ensemble '{options.ensemble}' ({', '.join(server.ensemble.labels)}), "
            f"classifier: {options.classifier} (--model-config-name={VARIANTS[options.classifier].config_name})"
        )
        print(f"  HTTP     http://{server.http_url}")
        print(f"  gRPC     {server.grpc_url}")
        print(f"  metrics  {server.metrics_url}")
        print(f'  try:     python client/classify.py --url {server.grpc_url} --text "i feel great today"')
        print("Ctrl-C stops it.", flush=True)
        return serve_forever(server, command.supervision)
    except KeyboardInterrupt:  # a signal after start, before serve_forever's handlers took over
        return stop_cleanly(server)
