"""The exported classifier graphs and the Python-backend classifier's core sharing, in-process on real files.

Every serving test runs them inside a real tritonserver too; these tests check what a
server hides: how the TorchScript graph cuts a ragged batch into chunks, that both graphs equal
the eager model row by row, and how the instances share the cores.
"""

import importlib.util
import os
import sys

import pytest
import torch

from emotion_triton.build.torchscript_export import RaggedClassifier, bucket_parameters, ragged_batch
from emotion_triton.repository import DEFAULT_REPOSITORY, Ensemble
from emotion_triton.serving.preflight import pytriton_dir
from tests.helpers.classifier_inputs import request

CLASSIFIER_PY = DEFAULT_REPOSITORY / "emotion_classifier" / "1" / "onnx_model.py"


@pytest.fixture
def classifier_module(monkeypatch):
    """The classifier's onnx_model.py, imported with the Python backend's real utility module.

    The Python backend puts the version folder on sys.path (onnx_model.py imports its sibling modules).
    """
    monkeypatch.syspath_prepend(str(CLASSIFIER_PY.parent))
    modules = {}
    for name, path in (
        ("triton_python_backend_utils", pytriton_dir() / "backends" / "python" / "triton_python_backend_utils.py"),
        ("emotion_classifier_model", CLASSIFIER_PY),
    ):
        spec = importlib.util.spec_from_file_location(name, path)
        modules[name] = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, modules[name])
        spec.loader.exec_module(modules[name])
    threads = torch.get_num_threads()
    yield modules["emotion_classifier_model"]
    torch.set_num_threads(threads)


class CountingClassifier(torch.nn.Module):
    """Stands in for the traced model: logits that are the row's token count, so chunks are visible."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return attention_mask.sum(1, keepdim=True).float().repeat(1, 3)


@pytest.mark.parametrize(
    ("chunking", "computed"),
    [
        ({}, [4, 4, 4, 41, 41, 120]),  # CPU: chunks of similar length (x1.25 or +8 tokens)
        ({"max_tokens_per_forward": 64}, [4, 4, 4, 40, 41, 120]),  # a chunk never exceeds 64 padded tokens ...
        ({"max_tokens_per_forward": 6}, [3, 4, 4, 40, 41, 120]),  # ... unless it is one row
        ({"max_length_spread": float("inf"), "max_tokens_per_forward": 1 << 40}, [120] * 6),  # the GPU's one chunk
    ],
)
def test_the_graph_cuts_a_ragged_batch_into_chunks_of_similar_length(chunking, computed):
    buckets = {**bucket_parameters(Ensemble.read()), **chunking}  # the production config's, changed
    graph = torch.jit.script(RaggedClassifier(CountingClassifier(), num_labels=3, pad_token_id=0, **buckets))
    requests = [request(100, [40, 3]), request(100, [120]), request(100, [4, 41, 4], seed=1)]
    logits, token_counts = graph(*ragged_batch(requests))
    real = [40, 3, 120, 4, 41, 4]  # in request order, whatever the chunks
    assert logits[:, 0].tolist() == real
    assert token_counts[:, 0].tolist() == real
    assert sorted(token_counts[:, 1].tolist()) == computed


def test_the_graph_refuses_rows_that_do_not_add_up():
    buckets = bucket_parameters(Ensemble.read())
    graph = torch.jit.script(RaggedClassifier(CountingClassifier(), num_labels=3, pad_token_id=0, **buckets))
    ids, mask, widths = ragged_batch([request(100, [5, 3])])
    with pytest.raises(Exception, match="describe different rows"):
        graph(ids, mask[:-1], widths)


def core_sharing(module, instance: int):
    config = {"instance_group": [{"name": "emotion_classifier_0", "count": 2, "kind": "KIND_CPU"}]}
    args = {"model_name": f"test_classifier_{os.getpid()}", "model_instance_name": f"emotion_classifier_0_{instance}"}
    return module.CoreSharing(args, config)


def test_a_lone_instance_may_use_every_core_and_a_crowded_one_may_not(classifier_module):
    first, second = core_sharing(classifier_module, 0), core_sharing(classifier_module, 1)
    try:
        assert first.path == second.path and os.path.exists(first.path)
        with first.busy(spread=True):
            assert first.alone()  # the other instance is idle
            with second.busy(spread=True):
                assert not second.alone()  # the first one is executing
                assert not first.alone()  # its next forward pass shares the cores too
            assert first.alone()
        assert not first.alone()  # outside execute()
        with second.busy(spread=True):
            assert second.alone()
        # A dynamic batch of several requests means a queue: the other instance is about to start.
        with first.busy(spread=False):
            assert not first.alone()
    finally:
        first.close()
        second.close()
    assert not os.path.exists(first.path)
