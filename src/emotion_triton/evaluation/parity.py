"""Parity of the served ensemble with the eager checkpoint (--compare-with): same labels, probabilities
within PARITY_TOLERANCE. The eager model comes in through the EagerReference protocol: this layer never
imports torch or transformers."""

from __future__ import annotations

from typing import Protocol

import numpy as np

PARITY_TOLERANCE = 1e-4  # largest allowed |served - eager| of any class probability (fp32)


# -- parity with the eager model ---------------------------------------------------------------


class EagerReference(Protocol):
    """The fine-tuned checkpoint run eagerly, loaded before any request is sent (--compare-with).

    The build layer implements it (emotion_triton.build.eager_reference, torch and transformers); the
    emotion-evaluate command passes its loader in, so this layer never imports either.
    """

    labels: list[str]  # the checkpoint's class names, in its own order

    def probabilities(self, texts: list[str], max_length: int) -> np.ndarray: ...


def compare_with_eager(
    reference: EagerReference, texts: list[str], served_scores: np.ndarray, server_labels: list[str], max_length: int
) -> dict:
    """Runs the eager model on the texts the server answered and compares labels and probabilities."""
    names = reference.labels
    report = {"compared": len(texts), "max_length": max_length, "tolerance": PARITY_TOLERANCE}
    if sorted(names) != sorted(server_labels):
        return {**report, "passed": False, "reason": f"the checkpoint's labels {names} are not the server's"}
    if not texts:
        return {**report, "passed": False, "reason": "the server answered no text to compare"}
    eager = reference.probabilities(texts, max_length)[:, [names.index(n) for n in server_labels]]
    eager_ids, served_ids = eager.argmax(axis=1), served_scores.argmax(axis=1)
    agreement = float((eager_ids == served_ids).mean())
    max_diff = float(np.abs(eager - served_scores).max())
    disagreements = [
        {
            "index": int(i),
            "text": texts[i],
            "served": server_labels[served_ids[i]],
            "eager": server_labels[eager_ids[i]],
        }
        for i in np.flatnonzero(eager_ids != served_ids)
    ]
    passed = agreement == 1.0 and max_diff < PARITY_TOLERANCE
    reason = None
    if not passed:
        reason = (
            f"labels agree on {agreement:.2%} of the texts (must be 100%), "
            f"largest probability difference {max_diff:.2e} (must be < {PARITY_TOLERANCE:g})"
        )
    return {
        **report,
        "agreement": agreement,
        "max_abs_diff": max_diff,
        "passed": passed,
        "reason": reason,
        "disagreements": disagreements,
    }
