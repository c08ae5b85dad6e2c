"""End to end through a real tritonserver: the ensemble over HTTP and gRPC matches the eager model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from emotion_triton.build.modeling import predict_logits, softmax
from emotion_triton.client import EmotionClient
from emotion_triton.repository import Ensemble
from tests.helpers.servers import CLASSIFIERS
from tests.helpers.tiny_models import FAMILIES

PROJECT = Path(__file__).resolve().parents[2]
CLASSIFY = [sys.executable, str(PROJECT / "client" / "classify.py")]


def mixed_texts(validation_texts, count=40):
    """Short and long texts together, one past the 128-token limit, and non-Latin scripts."""
    by_length = sorted(validation_texts, key=len)
    texts = by_length[: count // 2] + by_length[-count // 2 :]
    texts.append(" ".join(by_length[-3:]) * 2)  # truncated by the tokenizer
    texts.append("je me sens très heureux 😊 今日はとても嬉しい")
    return texts


@pytest.mark.parametrize("classifier", CLASSIFIERS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_scores_equal_the_eager_models_softmax(
    family, protocol, classifier, served, built_repository, validation_texts
):
    server = served(family, classifier)
    _, checkpoint = built_repository(family)
    texts = mixed_texts(validation_texts)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with EmotionClient(url, protocol, concurrency=2) as client:
        client_batch = 16  # several requests of mixed lengths, batched by the server
        client.config["max_batch_size"] = client_batch
        predictions = client.classify(texts)
        labels = client.labels
    assert labels == Ensemble.read(server.options.repository).labels
    assert [p.text for p in predictions] == texts and not any(p.error for p in predictions)

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    expected = softmax(predict_logits(model, tokenizer, texts, Ensemble.read(server.options.repository).max_length))
    served_scores = np.array([[p.scores[label] for label in labels] for p in predictions])
    assert np.abs(served_scores - expected).max() < 1e-4
    assert [p.label for p in predictions] == [labels[i] for i in expected.argmax(axis=1)]
    torch.testing.assert_close(served_scores.sum(axis=1), np.ones(len(texts)), atol=1e-5, rtol=0)


def test_classify_cli_prints_the_pipeline_json_format(served):
    server = served("distilbert")
    result = subprocess.run(
        [*CLASSIFY, "--url", server.grpc_url, "--json", "--text", "i feel great", "--text", "i am scared"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    labels = Ensemble.read(server.options.repository).labels
    assert len(output) == 2
    for per_text in output:
        assert [entry["label"] for entry in per_text] == labels
        assert abs(sum(entry["score"] for entry in per_text) - 1) < 1e-5


def test_classify_cli_reads_files_and_stdin_over_http(served, tmp_path):
    server = served("distilbert")
    (tmp_path / "texts.txt").write_text("i feel great\n\ni am so angry right now\n")
    from_file = subprocess.run(
        [*CLASSIFY, "--protocol", "http", "--url", server.http_url, "--file", str(tmp_path / "texts.txt")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    from_stdin = subprocess.run(
        [*CLASSIFY, "--protocol", "http", "--url", server.http_url],
        input="i feel great\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert from_file.returncode == 0 and from_stdin.returncode == 0
    assert from_file.stdout.count("%") == 2 * 6 and from_stdin.stdout.count("%") == 6
    assert from_stdin.stdout.splitlines()[0] == "i feel great"


def test_a_bad_text_fails_alone_and_its_neighbours_are_answered(served):
    server = served("distilbert")
    with EmotionClient(server.grpc_url) as client:
        predictions = client.classify(["i feel great", "   ", "i am scared", b"\xff\xfe broken"])
    assert [p.error is None for p in predictions] == [True, False, True, False]
    assert "empty" in predictions[1].error and "UTF-8" in predictions[3].error
    assert server.canary()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "127.0.0.1:1"], "cannot reach a Triton server at 127.0.0.1:1"),
        (["--protocol", "http", "--url", "127.0.0.1:1"], "cannot reach a Triton server at 127.0.0.1:1"),
        (["--model", "no_such_model"], "model 'no_such_model' is not served"),
    ],
)
def test_classify_cli_errors_are_one_line(served, args, message):
    server = served("distilbert")
    args = args if "--url" in args else ["--url", server.grpc_url, *args]
    result = subprocess.run([*CLASSIFY, *args, "--text", "hello"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
