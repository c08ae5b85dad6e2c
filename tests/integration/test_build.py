"""The build step on tiny models of the four families: fine-tune, export, check, install, report."""

import copy
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch

from emotion_triton.build import torchscript_export as export
from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.build.training import training_arguments
from emotion_triton.repository import DEFAULT_REPOSITORY as PROJECT_REPOSITORY
from emotion_triton.repository import Ensemble
from emotion_triton.serving.preflight import ServerError, check_repository_folders
from tests.helpers.servers import copy_repository, start_server
from tests.helpers.tiny_models import FAMILIES

PROJECT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("family", FAMILIES)
def test_build_installs_a_checked_model_and_a_full_report(family, built_repository):
    repository, checkpoint = built_repository(family)
    ensemble = Ensemble.read(repository)
    assert ensemble.is_built()
    assert ensemble.labels == ["sadness", "joy", "love", "anger", "fear", "surprise"]

    report = json.loads(ensemble.report_file.read_text())
    assert report["base_model"].endswith(f"tiny-{family}0")
    assert report["data"]["rows"] == {"train": 600, "validation": 200}
    assert report["training_arguments"]["max_steps"] == 4
    assert report["training"]["steps"] == 4 and report["training"]["training_seconds"] > 0
    validation = report["validation"]
    assert set(validation) >= {"accuracy", "f1_weighted", "f1_macro", "per_class", "confusion_matrix"}
    assert sum(map(sum, validation["confusion_matrix"])) == 200
    assert set(report["versions"]) >= {"torch", "transformers", "tokenizers", "python"}
    assert report["export_check"]["max_abs_logit_difference"] < 1e-4
    assert ensemble.report_file.with_name("confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (checkpoint / "config.json").exists()
    # model.onnx of the same checkpoint, checked against the eager model on the same batches.
    assert report["onnx"]["precision"] == "fp32" and ensemble.onnx_file.stat().st_size > 0
    assert report["onnx"]["export_check"]["max_abs_logit_difference"] < 1e-4
    assert report["onnx"]["export_check"]["texts_checked"] == report["export_check"]["texts_checked"]

    # The TorchScript signature is the classifier config's: (ids, mask, row widths) -> (logits, token counts).
    scripted = torch.jit.load(str(ensemble.model_file))
    config = ensemble.config(ensemble.classifier)
    assert len(list(scripted.graph.inputs())) - 1 == len(config.input) + len(config.batch_input)
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    logits, token_counts = scripted(*export.ragged_batch([{"input_ids": ids, "attention_mask": (ids > 0).long()}]))
    assert tuple(logits.shape) == (2, len(ensemble.labels))
    assert token_counts.tolist() == [[4, 4], [3, 4]]


@pytest.mark.parametrize(
    ("exporter", "message"),
    [
        ("emotion_triton.build.pipeline.trace", "TorchScript differs"),
        ("emotion_triton.build.onnx_export.export", "model.onnx differs"),
    ],
    ids=["model.pt", "model.onnx"],
)
def test_a_file_that_differs_from_the_eager_model_is_never_installed(
    tmp_path, tiny_base, small_data, monkeypatch, exporter, message
):
    repository = copy_repository(tmp_path / "repo")
    module, _, name = exporter.rpartition(".")
    real_exporter = getattr(importlib.import_module(module), name)

    def broken_exporter(model, *args):
        # A file of slightly different weights: the output layer's bias is off by 1e-3.
        other = copy.deepcopy(model)
        with torch.no_grad():
            list(other.parameters())[-1].add_(1e-3)
        return real_exporter(other, *args)

    monkeypatch.setattr(exporter, broken_exporter)
    options = BuildOptions(base_model=str(tiny_base("bert")), data=str(small_data), repository=repository)
    with pytest.raises(export.ExportCheckError, match=f"{message} .*nothing was installed"):
        build(options, training_arguments(tmp_path / "run", max_steps=1, per_device_train_batch_size=8))
    ensemble = Ensemble.read(repository)
    assert not ensemble.model_file.exists() and not ensemble.onnx_file.exists()
    assert not ensemble.tokenizer_file.exists()
    assert sorted(p.name for p in repository.iterdir()) == sorted(p.name for p in PROJECT_REPOSITORY.iterdir())


def test_a_build_killed_during_export_leaves_nothing_the_server_would_load(
    built_repository, small_data, tmp_path, monkeypatch
):
    """SIGKILL while the export writes its files: the repository gets no foreign folder, the real server
    starts, and the next build removes the killed one's staging folder."""
    _, checkpoint = built_repository("distilbert")
    repository = copy_repository(tmp_path / "repo")
    temp = tmp_path / "tmp"
    temp.mkdir()
    command = [sys.executable, str(PROJECT / "build" / "build.py"), "--finetuned", str(checkpoint)]
    command += ["--data", str(small_data), "--repository", str(repository), "--output_dir", str(tmp_path / "run")]
    process = subprocess.Popen(command, env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob(f"{export.STAGING_PREFIX}*")):
            assert process.poll() is None and time.monotonic() < deadline, "the build never reached its export"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    assert sorted(p.name for p in repository.iterdir()) == sorted(p.name for p in PROJECT_REPOSITORY.iterdir())
    (stale,) = temp.glob(f"{export.STAGING_PREFIX}*")

    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # the next build uses the same TMPDIR
    build(
        BuildOptions(finetuned=str(checkpoint), data=None, repository=repository), training_arguments(tmp_path / "run")
    )
    assert not stale.exists()
    assert not list(temp.glob(f"{export.STAGING_PREFIX}*"))  # its own staging is gone too
    server = start_server(repository, tmp_path)
    try:
        assert server.canary()
    finally:
        server.stop()


def test_the_server_names_a_folder_that_is_not_a_model_instead_of_letting_tritonserver_die(built_repository):
    repository, _ = built_repository("distilbert")
    (repository / ".staging-test").mkdir()
    try:
        with pytest.raises(ServerError, match=r"\.staging-test is not a model \(no config.pbtxt\).*: remove it$"):
            check_repository_folders(repository)
    finally:
        (repository / ".staging-test").rmdir()
    check_repository_folders(repository)


def test_export_of_a_finetuned_checkpoint_without_training(tmp_path, built_repository, validation_texts):
    _, checkpoint = built_repository("roberta")
    repository = copy_repository(tmp_path / "repo")
    report = build(
        BuildOptions(finetuned=str(checkpoint), data=None, repository=repository), training_arguments(tmp_path / "run")
    )
    assert "training" not in report
    ensemble = Ensemble.read(repository)
    assert ensemble.is_built()
    assert ensemble.labels == report["labels"]
    # Same weights as the checkpoint: the export check compared them on real texts.
    assert report["export_check"]["texts_checked"] > 10
    assert np.isfinite(report["export_check"]["max_abs_logit_difference"])
