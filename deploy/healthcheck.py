#!/usr/bin/env python3
"""Inference canary of the serving container: docker compose's healthcheck and the Kubernetes liveness probe.

    python3 healthcheck.py [--url http://127.0.0.1:8000] [--model emotion] [--health ready|live] [--timeout 10]

Triton keeps answering "ready" when a Python-backend stub has died, so readiness
alone proves little: after the health endpoint this sends one text to the
ensemble over HTTP and checks the answer (one label, class probabilities that
sum to 1). Exit 0 when it does, 1 otherwise, with a one-line reason.

An answer of 503/429 (queue full, or the request timed out in the queue) counts
as alive: the server answered, and failing health checks under load would
restart or drain the replicas that are doing the work.

Standard library only: it runs with the python3 of the Triton image.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_MODEL = "emotion"
# Names of model_repository/emotion/config.pbtxt (tests/test_deploy.py checks them).
INPUT_NAME = "TEXT"
LABEL_NAME = "LABEL"
SCORES_NAME = "SCORES"
CANARY_TEXT = "i feel fine today"
OVERLOADED = (429, 503)


class Unhealthy(Exception):
    """Why the server cannot answer a real inference."""


def _first_line(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read().decode("utf-8", "replace")
        text = json.loads(text).get("error", text)
    except (OSError, ValueError, AttributeError):
        text = ""
    text = str(text).strip().splitlines()[0] if str(text).strip() else error.reason
    return str(text)[:200]


def check_health(url: str, health: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/{health}", timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        raise Unhealthy(f"no answer from {url}: {getattr(error, 'reason', error)}") from None
    if status != 200:
        raise Unhealthy(f"/v2/health/{health} answered {status}")


def infer(url: str, model: str, timeout: float) -> str:
    """One text through the ensemble; returns a one-line summary, raises Unhealthy."""
    body = {
        "inputs": [{"name": INPUT_NAME, "shape": [1, 1], "datatype": "BYTES", "data": [CANARY_TEXT]}],
        "outputs": [{"name": LABEL_NAME}, {"name": SCORES_NAME}],
    }
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        if error.code in OVERLOADED:
            return f"overloaded but answering ({error.code}: {_first_line(error)})"
        raise Unhealthy(f"inference on '{model}' answered {error.code}: {_first_line(error)}") from None
    except (urllib.error.URLError, OSError) as error:
        raise Unhealthy(
            f"no inference answer from '{model}' within {timeout:g} s: {getattr(error, 'reason', error)}"
        ) from None
    except ValueError as error:
        raise Unhealthy(f"inference on '{model}' answered invalid JSON: {error}") from None

    outputs = {output.get("name"): output.get("data") for output in answer.get("outputs", [])}
    label, scores = outputs.get(LABEL_NAME), outputs.get(SCORES_NAME)
    if not isinstance(label, list) or len(label) != 1 or not isinstance(label[0], str) or not label[0]:
        raise Unhealthy(f"'{model}' answered no {LABEL_NAME} for one text: {str(label)[:100]}")
    if not isinstance(scores, list) or len(scores) < 2 or not all(isinstance(s, int | float) for s in scores):
        raise Unhealthy(f"'{model}' answered no class probabilities in {SCORES_NAME}: {str(scores)[:100]}")
    if not all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores) or abs(sum(scores) - 1.0) > 1e-3:
        raise Unhealthy(f"'{model}' answered {SCORES_NAME} that are not probabilities: {str(scores)[:100]}")
    return f"'{CANARY_TEXT}' -> {label[0]} ({max(scores):.2f})"


def check(
    url: str = DEFAULT_URL, model: str = DEFAULT_MODEL, health: str = "ready", timeout: float = 10.0, canaries: int = 4
) -> str:
    """Health endpoint, then `canaries` inferences: a step runs 2 instances, and a request reaches
    only one of them, so a single canary would miss a dead stub half of the time."""
    url = url.rstrip("/")
    check_health(url, health, timeout)
    summary = ""
    for _ in range(max(1, canaries)):
        summary = infer(url, model, timeout)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when the ensemble answers a real inference.")
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton's HTTP endpoint (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model to send the text to (default: %(default)s)")
    parser.add_argument(
        "--health",
        choices=("ready", "live"),
        default="ready",
        help="health endpoint checked first: ready (compose) or live (Kubernetes liveness) (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: %(default)s)")
    parser.add_argument("--canaries", type=int, default=4, help="inferences per check (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        summary = check(args.url, args.model, args.health, args.timeout, args.canaries)
    except Unhealthy as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    print(f"healthy: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
