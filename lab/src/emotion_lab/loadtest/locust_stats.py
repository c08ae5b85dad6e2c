"""One call timed and checked, and the texts-per-second and accuracy entries written into Locust's stats."""

from __future__ import annotations

import time

import numpy as np

from emotion_triton.client import ClientError, EmotionClient

from .options import ACCURACY, TEXTS, Settings
from .workload import ServerInfo


# -- one call -------------------------------------------------------------------------------------
def check_answer(labels: list[str], scores: np.ndarray, count: int, names: list[str]) -> str | None:
    """Why an answer is unusable (wrong shape, unknown label, scores not probabilities), or None."""
    if len(labels) != count or scores.shape != (count, len(names)):
        return f"bad answer: {len(labels)} labels and scores {list(scores.shape)} for {count} texts"
    if any(label not in names for label in labels):
        return f"bad answer: a label not among {names}"
    if not np.all(np.isfinite(scores)) or np.abs(scores.sum(axis=1) - 1).max() > 1e-3:
        return "bad answer: scores are not probabilities"
    given = scores[np.arange(count), [names.index(label) for label in labels]]
    if np.any(given < scores.max(axis=1) - 1e-6):
        return "bad answer: the label is not the highest score"
    return None


def failure_message(error: Exception) -> str:
    """One stable line per kind of failure (so the failures table groups them): `overloaded: ...`."""
    if isinstance(error, ClientError):
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"{error.kind}: {text[:160]}"
    return f"error: {type(error).__name__}: {str(error).strip()[:160]}"


def log_texts(stats, texts: list[str], response_time: float) -> None:
    """The texts-per-second entry: one entry per answered text, its size the text's UTF-8 bytes."""
    entry = stats.get(TEXTS[1], TEXTS[0])
    for text in texts:
        entry.log(response_time, len(text.encode("utf-8")))


def log_accuracy(stats, expected: list[str], answered: list[str], response_time: float) -> int:
    """The accuracy entry: a right label logs size 100, a wrong one size 0 and a failure. Returns wrong."""
    from locust.stats import StatsError  # only ever called inside locust

    method, name = ACCURACY
    entry = stats.get(name, method)
    wrong = 0
    for want, got in zip(expected, answered, strict=True):
        entry.log(response_time, 100 if want == got else 0)
        if want != got:
            wrong += 1
            error = f"wrong label: expected {want}, got {got}"
            entry.log_error(error)
            key = StatsError.create_key(method, name, error)
            stats.errors.setdefault(key, StatsError(method, name, error)).occurred()
    return wrong


def call(environment, client: EmotionClient, settings: Settings, server: ServerInfo, name, texts, expected=None):
    """One inference, timed and reported through locust's request event (and the texts/accuracy entries)."""
    payload = sum(len(text.encode("utf-8")) for text in texts)
    start = time.perf_counter()
    error = answered = None
    try:
        answered, scores = client.infer(texts)
        error = check_answer(answered, scores, len(texts), server.labels)
    except Exception as caught:  # every failure is counted and named, never raised into locust
        error = failure_message(caught)
    response_time = (time.perf_counter() - start) * 1000
    environment.events.request.fire(
        request_type=settings.request_type,
        name=name,
        response_time=response_time,
        response_length=payload,
        exception=error,
        context={"texts": len(texts)},
    )
    if error is None:
        log_texts(environment.stats, texts, response_time)
        if expected is not None:
            log_accuracy(environment.stats, expected, answered, response_time)
