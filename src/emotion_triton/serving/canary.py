"""The inference canary: one text through the ensemble over HTTP, its answer checked.

Triton keeps answering "ready" when a Python-backend stub has died, so readiness alone proves
little; a real inference does. One implementation for every caller: the local server's supervision
(LocalServer.health_problem) and the container's healthcheck (deploy/healthcheck.py, which
docker/tritonserver.Dockerfile copies next to this file as /opt/emotion-triton/canary.py).

Standard library only: it runs with the python3 of the Triton image, where protobuf is not
installed, so the ensemble's names are constants here (tests/deployment/test_healthcheck.py checks them against
model_repository/emotion/config.pbtxt), and it speaks Triton's HTTP API with urllib, where the rest
of the package speaks it through tritonclient (emotion_triton/triton_http.py). Where the package is
installed, Unhealthy derives from the package's error root (errors.py, standard library only too).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

try:  # the package; the serving image has this file alone, as canary.py
    from ..errors import EmotionTritonError as _ErrorRoot
except ImportError:
    _ErrorRoot = Exception

DEFAULT_URL = "http://127.0.0.1:8000"
# Names of model_repository/emotion/config.pbtxt (tests/deployment/test_healthcheck.py checks them).
DEFAULT_MODEL = "emotion"
INPUT_NAME = "TEXT"
LABEL_NAME = "LABEL"
SCORES_NAME = "SCORES"
CANARY_TEXT = "i feel fine today"
OVERLOADED = (429, 503)  # queue full or queue timeout: the server answered, it is busy, not broken


class Unhealthy(_ErrorRoot):
    """Why the server cannot answer a real inference, in one line."""


def error_text(error: urllib.error.HTTPError) -> str:
    """The first line of Triton's {"error": "..."} answer (or of the body, or the reason)."""
    try:
        text = error.read().decode("utf-8", "replace")
        text = json.loads(text).get("error", text)
    except (OSError, ValueError, AttributeError):
        text = ""
    text = str(text).strip().splitlines()[0] if str(text).strip() else error.reason
    return str(text)[:200]


def check_health(url: str, health: str, timeout: float) -> None:
    """/v2/health/<health> (ready or live) answers 200; raises Unhealthy."""
    try:
        with urllib.request.urlopen(f"{url}/v2/health/{health}", timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        raise Unhealthy(f"no answer from {url}: {getattr(error, 'reason', error)}") from None
    if status != 200:
        raise Unhealthy(f"/v2/health/{health} answered {status}")


def infer(url: str, model: str, timeout: float) -> tuple[str, bool]:
    """One text through the ensemble: (one-line summary, overloaded); raises Unhealthy.

    Overloaded (429/503: a full queue or a queue timeout) is not unhealthy: the server answered.
    """
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
            return f"overloaded but answering ({error.code}: {error_text(error)})", True
        raise Unhealthy(f"inference on '{model}' answered {error.code}: {error_text(error)}") from None
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
    return f"'{CANARY_TEXT}' -> {label[0]} ({max(scores):.2f})", False


def problem(url: str, model: str = DEFAULT_MODEL, timeout: float = 10.0, overloaded_ok: bool = True) -> str | None:
    """None when the server is ready and `model` answers the canary; otherwise why not, in one line.

    With `overloaded_ok`, an overload answer counts as healthy (restarting a busy server helps nobody).
    """
    try:
        check_health(url, "ready", min(2.0, timeout))
        summary, overloaded = infer(url, model, timeout)
    except Unhealthy as error:
        return str(error)
    return summary if overloaded and not overloaded_ok else None
