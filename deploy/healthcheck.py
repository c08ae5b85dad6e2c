#!/usr/bin/env python3
"""Inference canary of the serving container: docker compose's healthcheck and the Kubernetes probes.

    python3 healthcheck.py [--url http://127.0.0.1:8000] [--model emotion] [--health ready|live]
                           [--canaries 1] [--timeout 15] [--canary-timeout 13] [--health-timeout 2]

Triton keeps answering "ready" when a Python-backend stub has died, so readiness
alone proves little: after the health endpoint this sends up to `--canaries`
texts to the ensemble over HTTP, one after the other, and checks each answer
(one label, class probabilities that sum to 1). Exit 0 when they are right, 1
otherwise, with a one-line reason; 2 for options that cannot fit their deadline.

An answer of 503/429 (queue full, or the request timed out in a queue) counts as
alive and ends the check: the server answered, and failing health checks under
load would restart or drain the replicas that are doing the work. The next
canaries would only wait in the same queues.

Time. The whole check ends within `--timeout` seconds of its start, whatever the
server does (the caller's own timeout must allow that plus the interpreter's
start): the health call gets at most `--health-timeout`, the first canary
`--canary-timeout`, and a further canary is sent only while a whole
`--canary-timeout` is left. `--canary-timeout` must cover the longest a canary
can legitimately take on a saturated server: the queue timeouts of the three
ensemble steps (default_queue_policy in their config.pbtxt) plus one execution
ahead of it in each step. tests/deployment/test_healthcheck.py derives that from the configs and
checks every probe against it.

The canary itself (one text, its answer checked) is emotion_triton/serving/canary.py, the local
server's too; the image has it next to this file. Standard library only: it runs with the python3 of
the Triton image.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

try:  # the package, where it is installed (a checkout, the tests)
    from emotion_triton.serving.canary import DEFAULT_MODEL, DEFAULT_URL, Unhealthy, check_health, infer
except ImportError:  # the serving image: canary.py next to this file (docker/tritonserver.Dockerfile)
    from canary import DEFAULT_MODEL, DEFAULT_URL, Unhealthy, check_health, infer

# Without options one canary gets 13 s: more than it can take on a saturated server with the
# production configs, 3 queue timeouts (2 + 4 + 2 s) + 3 executions (tests/deployment/test_healthcheck.py checks it).
DEFAULT_TIMEOUT = 15.0
DEFAULT_HEALTH_TIMEOUT = 2.0


def check(
    url: str = DEFAULT_URL,
    model: str = DEFAULT_MODEL,
    health: str = "ready",
    timeout: float = DEFAULT_TIMEOUT,
    canaries: int = 1,
    canary_timeout: float | None = None,
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
) -> str:
    """Health endpoint, then up to `canaries` inferences, all within `timeout` seconds.

    A step with 2 instances hands a request to one of them, so one canary misses a dead
    stub half of the time: readiness sends several. A further canary goes out only while a whole
    `canary_timeout` is left, so a slow but working server is never judged by a cut-off request.
    """
    deadline = time.monotonic() + timeout
    canary_timeout = timeout - health_timeout if canary_timeout is None else canary_timeout
    url = url.rstrip("/")
    check_health(url, health, max(0.001, min(health_timeout, deadline - time.monotonic())))
    answered = 0
    summary = ""
    for _ in range(max(1, canaries)):
        left = deadline - time.monotonic()
        if answered and left < canary_timeout:
            break
        summary, busy = infer(url, model, max(0.001, min(canary_timeout, left)))
        if busy:
            return summary
        answered += 1
    return f"{summary}; {answered} canar{'y' if answered == 1 else 'ies'} answered"


class _Deadline(Exception):
    pass


def _alarm(signum, frame):
    raise _Deadline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Exit 0 when the ensemble answers a real inference.")
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton's HTTP endpoint (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model to send the text to (default: %(default)s)")
    parser.add_argument(
        "--health",
        choices=("ready", "live"),
        default="ready",
        help="health endpoint checked first: ready (readiness, compose) or live (liveness) (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds the whole check may take; the caller's timeout must allow this plus the start "
        "of python3 (default: %(default)s)",
    )
    parser.add_argument(
        "--canaries",
        type=int,
        default=1,
        help="most inferences per check; after the first, one more only while --canary-timeout is left "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--canary-timeout",
        type=float,
        default=None,
        help="seconds one inference may take: the queue timeouts of the ensemble's steps plus one "
        "execution each (default: what --timeout leaves after --health-timeout)",
    )
    parser.add_argument(
        "--health-timeout",
        type=float,
        default=DEFAULT_HEALTH_TIMEOUT,
        help="seconds the health endpoint may take (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.canary_timeout is None:
        args.canary_timeout = args.timeout - args.health_timeout
    if min(args.timeout, args.canary_timeout, args.health_timeout) <= 0 or args.canaries < 1:
        parser.error("--timeout, --canary-timeout, --health-timeout and --canaries must be positive")
    if args.health_timeout + args.canary_timeout > args.timeout:
        parser.error(
            f"--timeout {args.timeout:g} cannot hold --health-timeout {args.health_timeout:g} "
            f"+ --canary-timeout {args.canary_timeout:g}"
        )
    return args


def main(argv: list[str] | None = None, hard_stop: bool = False) -> int:
    """With `hard_stop` (the script, not a caller in the same process: it takes SIGALRM), the check
    ends at its deadline whatever the requests do, even a server that answers one byte at a time."""
    args = parse_args(argv)
    hard_stop = hard_stop and threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if hard_stop:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        summary = check(
            args.url, args.model, args.health, args.timeout, args.canaries, args.canary_timeout, args.health_timeout
        )
    except Unhealthy as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    except _Deadline:
        print(f"unhealthy: the check did not finish within --timeout {args.timeout:g} s", file=sys.stderr)
        return 1
    finally:
        if hard_stop:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    print(f"healthy: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(hard_stop=True))
