"""Both exported classifier graphs (TorchScript and ONNX) of a tiny model equal the eager model row by
row, in-process on real files (every serving test runs them inside a real tritonserver too)."""

import pytest
import torch
from tokenizers import Tokenizer

from emotion_triton.build import onnx_export
from emotion_triton.build.torchscript_export import LogitsOnly, bucket_parameters, ragged_batch
from emotion_triton.repository import Ensemble
from tests.helpers.classifier_inputs import request


@pytest.mark.parametrize("family", ["distilbert", "roberta"])
def test_the_exported_graphs_equal_the_eager_model_row_by_row(built_repository, family):
    """model.pt and model.onnx as the onnx variant runs it: the same length buckets, the same logits."""
    repository, checkpoint = built_repository(family)
    from transformers import AutoModelForSequenceClassification

    ensemble = Ensemble.read(repository)
    eager = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    graph = torch.jit.load(str(ensemble.model_file)).eval()
    vocab = Tokenizer.from_file(str(ensemble.tokenizer_file)).get_vocab_size()
    requests = [request(vocab, [23, 9, 2, 16]), request(vocab, [60], seed=1), request(vocab, [7, 7], seed=2)]
    with torch.inference_mode():
        logits, token_counts = graph(*ragged_batch(requests))
        expected = torch.cat([LogitsOnly(eager)(r["input_ids"], r["attention_mask"]) for r in requests])
    buckets = bucket_parameters(ensemble)
    served_onnx = onnx_export.served_forward(onnx_export.open_session(ensemble.onnx_file), buckets)
    onnx_logits, onnx_token_counts = served_onnx(requests)
    assert torch.allclose(logits, expected, atol=1e-4)
    assert torch.allclose(torch.from_numpy(onnx_logits), expected, atol=1e-4)
    # 7 rows sorted by length: buckets [2, 7, 7, 9] (within 8 tokens of 2), [16, 23] (x1.25 or +8), [60].
    real, computed = (23, 9, 2, 16, 60, 7, 7), (23, 9, 9, 23, 60, 9, 9)
    assert token_counts.tolist() == [list(pair) for pair in zip(real, computed, strict=True)]
    assert onnx_token_counts.tolist() == token_counts.tolist(), "one length-bucketing policy for both files"
