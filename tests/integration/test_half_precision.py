"""The GPU's half-precision file (model_gpu.pt): its gate against the fp32 export, and the production
config serving it through Triton's PyTorch backend. Only the device differs from a GPU host: the
production config's instances are switched to the CPU here (torch runs fp16 and bf16 on the CPU)."""

import re

import numpy as np
import pytest
import torch

from emotion_triton.build import precision_gate
from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.build.torchscript_export import served_forward
from emotion_triton.build.training import training_arguments
from emotion_triton.client import EmotionClient
from emotion_triton.repository import VARIANTS, Ensemble
from tests.helpers.servers import copy_repository, start_server

TEXTS = ["i feel wonderful today", "this is terrifying", "i am so angry at all of this " * 6, "meh"]


def half_build(tmp_path, checkpoint, small_data, precision: str) -> Ensemble:
    options = BuildOptions(
        finetuned=str(checkpoint),
        data=str(small_data / "validation.txt"),
        repository=copy_repository(tmp_path / f"repo-{precision}"),
        gpu_precision=precision,
    )
    build(options, training_arguments(tmp_path / f"run-{precision}"))
    return Ensemble.read(options.repository)


def on_cpu_instances(ensemble: Ensemble) -> None:
    """The production config.pbtxt of this copy with its instances on the CPU: nothing else changes."""
    path = ensemble.config_path(ensemble.classifier)
    path.write_text(re.sub(r"kind: KIND_GPU", "kind: KIND_CPU", path.read_text()))


@pytest.mark.parametrize(("precision", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_the_half_file_passes_its_gate_and_serves_in_the_production_config(
    tmp_path, built_repository, small_data, precision, dtype
):
    _, checkpoint = built_repository("bert")
    ensemble = half_build(tmp_path, checkpoint, small_data, precision)
    report = ensemble.report()["gpu_file"]
    assert report["installed"] == precision and report["passed"]
    assert report["label_agreement"] >= precision_gate.MIN_HALF_LABEL_AGREEMENT
    assert set(report["by_layout"]) == {"requests of 64 texts in file order", "one text per request"}
    gpu_file = ensemble.served_file("production")
    assert (
        gpu_file.name
        == VARIANTS["production"].served_file
        == ensemble.config(ensemble.classifier).default_model_filename
    )
    graph = torch.jit.load(str(gpu_file))
    inlined = graph.inlined_graph  # kept: its nodes live as long as it does
    constants = [node.output().toIValue() for node in inlined.findAllNodes("prim::Constant")]
    weights = [c for c in constants if isinstance(c, torch.Tensor) and c.is_floating_point() and c.dim() == 2]
    assert weights and {w.dtype for w in weights} == {dtype}, "every weight matrix is half"

    tokenized = [ensemble_tokenize(ensemble, [text]) for text in TEXTS]
    in_process, _ = served_forward(graph)(tokenized)
    assert in_process.dtype == torch.float32, "logits leave the graph in fp32"

    on_cpu_instances(ensemble)
    server = start_server(ensemble.repository, tmp_path, classifier="production")
    try:
        with EmotionClient(server.grpc_url) as client:
            served = [client.classify([text])[0] for text in TEXTS]
    finally:
        server.stop()
    labels = ensemble.labels
    expected = torch.softmax(in_process, dim=1).numpy()
    got = np.array([[prediction.scores[label] for label in labels] for prediction in served])
    assert np.allclose(got, expected, atol=1e-3), "Triton serves the half file as it runs in-process"
    assert [prediction.label for prediction in served] == [labels[i] for i in expected.argmax(1)]


def ensemble_tokenize(ensemble: Ensemble, texts: list[str]) -> dict:
    """One request of `texts` as emotion_tokenizer makes it (the installed tokenizer.json, padded to its longest)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(ensemble.tokenizer_file))
    tokenizer.enable_truncation(ensemble.max_length)
    encoded = tokenizer.encode_batch(texts)
    return {
        "input_ids": torch.tensor([e.ids for e in encoded]),
        "attention_mask": torch.tensor([e.attention_mask for e in encoded]),
    }


def test_a_half_file_that_changes_labels_is_installed_in_fp32(tmp_path, built_repository, small_data, monkeypatch):
    _, checkpoint = built_repository("bert")
    monkeypatch.setattr(precision_gate, "MIN_HALF_LABEL_AGREEMENT", 1.01)  # no file can keep more than all labels
    ensemble = half_build(tmp_path, checkpoint, small_data, "fp16")
    report = ensemble.report()["gpu_file"]
    assert (report["passed"], report["installed"]) == (False, "fp32")
    graph = torch.jit.load(str(ensemble.served_file("production")))
    fp32 = torch.jit.load(str(ensemble.model_file))
    tokenized = [ensemble_tokenize(ensemble, TEXTS)]
    assert torch.equal(served_forward(graph)(tokenized)[0], served_forward(fp32)(tokenized)[0])
