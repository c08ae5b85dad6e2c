"""Fixtures of the integration tests (the session's models and servers are tests/conftest.py's)."""

from __future__ import annotations

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from emotion_triton.build.modeling import predict_logits, softmax
from emotion_triton.repository import Ensemble
from tests.helpers.triton_requests import FAMILY, KNOWN_TEXTS


@pytest.fixture(scope="module")
def known(built_repository):
    """The eager model's class probabilities of KNOWN_TEXTS: what every healthy server must answer."""
    repository, checkpoint = built_repository(FAMILY)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    return softmax(predict_logits(model, tokenizer, KNOWN_TEXTS, Ensemble.read(repository).max_length))
