"""Triton's Prometheus metrics endpoint, read into {(metric name, model name): value}.

prometheus_client is not in requirements.lock: Triton's per-model lines are parsed with one regular expression.
"""

from __future__ import annotations

import re
import urllib.request


def triton_metrics(metrics_url: str, timeout: float = 10.0) -> dict[tuple[str, str], float]:
    """Triton's per-model metrics: {(metric name, model name): value, summed over versions}."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
        text = response.read().decode()
    values: dict[tuple[str, str], float] = {}
    for name, model, value in re.findall(r'^(\w+)\{model="([^"]+)"[^}]*\} (\S+)$', text, re.MULTILINE):
        values[name, model] = values.get((name, model), 0.0) + float(value)
    return values


# The classifier's tokens without and with padding, counted by the postprocess step's model.py
# (which cannot import this package; a test reads both names from a served model's metrics).
REAL_TOKENS, COMPUTED_TOKENS = "emotion_classifier_real_tokens_total", "emotion_classifier_computed_tokens_total"


def metric_total(metrics: dict[tuple[str, str], float], name: str, model: str | None = None) -> float:
    """A metric of `triton_metrics` summed over the models reporting it, or only `model`'s."""
    return sum(value for (n, m), value in metrics.items() if n == name and model in (None, m))
