"""The CPU classifier's own speed-ups, tested in-process on real exported TorchScript files.

Every serving test runs them inside a real tritonserver too; these tests check what a
server hides: that the oneDNN rewrite changes the kernels and not the logits, and how
the instances share the cores.
"""

import importlib.util
import os
import sys

import pytest
import torch
from tokenizers import Tokenizer

from emotion_triton.repository import DEFAULT_REPOSITORY, Ensemble, parameter
from emotion_triton.server import pytriton_dir

CLASSIFIER_PY = DEFAULT_REPOSITORY / "emotion_classifier" / "1" / "model.py"


@pytest.fixture
def classifier_module(monkeypatch):
    """The classifier's model.py, imported with the Python backend's real utility module."""
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


def mixed_batch(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (4, 23), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate((23, 9, 2, 16)):
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("family", ["distilbert", "bert", "albert"])
def test_onednn_linear_changes_the_kernels_not_the_logits(classifier_module, built_repository, family):
    repository, _ = built_repository(family)
    path = str(Ensemble.read(repository).model_file)
    exported, rewritten = torch.jit.load(path).eval(), torch.jit.load(path).eval()
    linears = len(exported.inlined_graph.findAllNodes("aten::linear"))

    assert classifier_module.use_onednn_linear(rewritten) == linears > 0
    assert not rewritten.graph.findAllNodes("aten::linear")
    assert not rewritten.graph.findAllNodes("mkldnn::_reorder_linear_weight"), "weights are packed once, at load"
    ids, mask = mixed_batch(Tokenizer.from_file(str(Ensemble.read(repository).tokenizer_file)).get_vocab_size())
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        expected, got = exported(ids, mask), rewritten(ids, mask)
        alone = rewritten(ids[2:3, :2], mask[2:3, :2])  # a batch of one short text, another kernel shape
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert torch.allclose(alone, expected[2:3], atol=1e-4)


def test_onednn_linear_keeps_a_module_that_is_not_frozen_correct(classifier_module):
    eager = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3)).eval()
    rewritten = torch.jit.script(eager)
    # The weights are module attributes, not constants: they are packed on every call, still correct.
    assert classifier_module.use_onednn_linear(rewritten) == 2
    x = torch.randn(5, 8)
    with torch.inference_mode():
        assert torch.allclose(rewritten(x), eager(x), atol=1e-5)


def core_sharing(module, instance: int):
    config = {"instance_group": [{"name": "emotion_classifier_0", "count": 2, "kind": "KIND_CPU"}]}
    args = {"model_name": f"test_classifier_{os.getpid()}", "model_instance_name": f"emotion_classifier_0_{instance}"}
    return module.CoreSharing(args, config, threads_shared=1, threads_alone=2)


def test_a_lone_instance_runs_on_more_threads_than_a_crowded_one(classifier_module):
    first, second = core_sharing(classifier_module, 0), core_sharing(classifier_module, 1)
    try:
        assert first.path == second.path and os.path.exists(first.path)
        with first.busy(spread=True):
            first.set_threads()
            assert torch.get_num_threads() == 2  # the other instance is idle
            with second.busy(spread=True):
                second.set_threads()
                assert torch.get_num_threads() == 1  # the first one is executing
                first.set_threads()
                assert torch.get_num_threads() == 1  # its next forward pass shares the cores too
            first.set_threads()
            assert torch.get_num_threads() == 2
        with second.busy(spread=True):
            second.set_threads()
            assert torch.get_num_threads() == 2
        # A dynamic batch of several requests means a queue: the other instance is about to start.
        with first.busy(spread=False):
            first.set_threads()
            assert torch.get_num_threads() == 1
    finally:
        first.close()
        second.close()
    assert not os.path.exists(first.path)


def test_local_config_names_the_speed_ups():
    ensemble = Ensemble.read()
    config = ensemble.config(ensemble.classifier, "local")
    threads = int(parameter(config, "intra_op_threads"))
    assert parameter(config, "onednn_linear") in ("true", "false")
    assert threads >= 1
    assert int(parameter(config, "intra_op_threads_alone")) in (0, *range(threads + 1, 65))
