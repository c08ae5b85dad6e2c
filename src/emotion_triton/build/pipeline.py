"""The build step: fine-tune (or take a fine-tuned checkpoint), export, check, install."""

from __future__ import annotations

import copy
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from tqdm.auto import tqdm

from .. import data as data_module
from ..errors import EmotionTritonError
from ..evaluation.classification_metrics import classification_metrics, format_metrics, plot_confusion_matrix
from ..hub import HubUnavailableError, check_local_path, resolve_packaged_model
from ..repository import DEFAULT_REPOSITORY, PROJECT_ROOT, Ensemble
from ..repository.versions import prune, serving_server
from . import onnx_export, precision_gate, torchscript_export
from .modeling import checkpoint_labels, load_classifier, load_tokenizer
from .torchscript_export import STAGING_PREFIX, bucket_parameters, check_against_eager, install, trace
from .training import MODEL_CARD_TRAINING, fine_tune, plan_training, predicted_ids, training_arguments


@dataclass
class BuildOptions:
    """What to build and where; how to train is `transformers.TrainingArguments` (`build(options, training)`)."""

    base_model: str = field(
        default="distilbert-base-uncased", metadata={"help": "Hub id or local directory of the pretrained encoder"}
    )
    data: str | None = field(
        default="dair-ai/emotion", metadata={"help": "Hub data set id or a local directory/file of labelled text"}
    )
    finetuned: str | None = field(
        default=None, metadata={"help": "export this fine-tuned checkpoint (Hub id or directory) without training"}
    )
    repository: Path = field(default=DEFAULT_REPOSITORY, metadata={"help": "the model repository to install into"})
    labels: list[str] | None = field(
        default=None, metadata={"help": "class names in output order (default: from the data)"}
    )
    quantize: str = field(
        default="none",
        metadata={
            "choices": ["none", "int8"],
            "help": "int8: dynamic int8 for CPU serving (PyTorch's of the Linear layers in model.pt, ONNX "
            "Runtime's in model.onnx); a file that loses more than 0.5 points as served is installed in fp32",
        },
    )
    gpu_precision: str = field(
        default="fp16",
        metadata={
            "choices": ["fp16", "bf16", "fp32"],
            "help": "precision of model_gpu.pt, the production (GPU) config's file: fp16 (the default) runs on "
            "the tensor cores of every NVIDIA GPU since Volta, the T4 included, bf16 only from Ampere on; a half "
            "file that changes the accuracy by more than 0.2 points or keeps under 99.5% of the fp32 export's "
            "labels as served is installed in fp32",
        },
    )
    max_length: int = field(default=128, metadata={"help": "tokens per text; longer texts are truncated"})
    average_last_epochs: int = field(
        default=1, metadata={"help": "install the mean of the weights saved after the last N epochs (1: the last)"}
    )


logger = logging.getLogger(__name__)

# What a missing path was meant to be: said with the error (a preset names its data folder without the user typing it).
SOURCE_HINTS = {
    "--data": "expected a folder with train and validation files (text;label lines, CSV or JSON Lines), "
    "a single file, or a Hub data set id",
}

# The roll-out check's sample: the first validation texts, with the labels the eager fp32 model gave them.
# A roll-out sends them through the server and refuses the version unless its accuracy on them is
# within the tolerance of the eager model's. fp32: the export checks bound the logits, so labels
# differ only on near-ties (1 point = 2-3 texts of 256); int8: its quantization may change up to
# 1.2% of labels against fp32 (measured, docs/performance.md) plus the build's 0.5-point limit.
ROLLOUT_SAMPLE_SIZE = 256
ROLLOUT_TOLERANCE_POINTS = {"none": 1.0, "int8": 3.0}


class QuantizationRefused(EmotionTritonError, ValueError):
    """Both int8 files lose too much accuracy, or their loss cannot be measured."""


def run_name(options: BuildOptions) -> str:
    source = options.finetuned or f"{options.base_model}-{options.data}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in source.strip("/").split("/")[-1] if c)[:80]


def build(options: BuildOptions, training=None) -> dict:
    """Runs the whole build and returns its report (also written next to the model).

    `training` (transformers.TrainingArguments, see training.training_arguments) is the fine-tune's
    recipe; its output_dir is the run's folder (default runs/<name>): epoch checkpoints, the
    fine-tuned checkpoint/ and the confusion matrix.
    """
    sources = {"--finetuned": options.finetuned, "--base-model": options.base_model, "--data": options.data}
    for option, value in sources.items():  # a mistyped path fails before anything is loaded or written
        if value:
            check_local_path(value, option, SOURCE_HINTS.get(option, ""))
    int8 = options.quantize == "int8"
    if int8 and options.finetuned and not options.data:
        raise QuantizationRefused("--quantize int8 needs --data with a validation split to measure its accuracy loss")
    ensemble = Ensemble.read(options.repository)
    if training is None:
        training = training_arguments(PROJECT_ROOT / "runs" / run_name(options), **MODEL_CARD_TRAINING)
    work_dir = Path(training.output_dir)
    max_length = options.max_length
    report: dict = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": _versions()}

    if options.finetuned:
        source = resolve_packaged_model(options.finetuned)
        tokenizer = load_tokenizer(source, "--finetuned")
        model = load_classifier(source, "--finetuned")
        label_names = checkpoint_labels(model)
        report["finetuned"] = options.finetuned
        data = _load_data(options.data, label_names) if options.data else None
        work_dir.mkdir(parents=True, exist_ok=True)
    else:
        data = _load_data(options.data, options.labels)
        if "train" not in data.splits or "validation" not in data.splits:
            raise ValueError(f"--data {options.data}: fine-tuning needs a train and a validation split")
        label_names = data.label_names
        # Every clash of options, data and output folder is found here, before the model loads and a step runs.
        plan = plan_training(training, data, max_length, options.average_last_epochs)
        base = resolve_packaged_model(options.base_model)
        from transformers import set_seed

        set_seed(training.seed)  # the new classification head's initial weights
        tokenizer = load_tokenizer(base, "--base-model")
        model = load_classifier(base, "--base-model", label_names)
        report["base_model"] = options.base_model
        report["training_arguments"] = {
            **training.to_dict(),
            "max_length": max_length,
            "average_last_epochs": options.average_last_epochs,
        }
        report["training"] = fine_tune(model, tokenizer, data, training, max_length, plan)
        checkpoint = work_dir / "checkpoint"
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        report["checkpoint"] = str(checkpoint)
        tqdm.write(f"fine-tuned checkpoint saved in {checkpoint}")

    report["labels"] = label_names
    report["max_length"] = max_length
    confusion_png, fp32_ids = None, None
    if data is not None:
        report["data"] = {
            "source": data.source,
            "rows": {name: len(split.texts) for name, split in data.splits.items()},
            "skipped_rows": {name: split.problems.total for name, split in data.splits.items()},
        }
        if "validation" in data.splits:
            fp32_ids = predicted_ids(model, tokenizer, data, "validation", max_length)
            metrics = classification_metrics(data.ids("validation"), fp32_ids, data.label_names)
            report["validation"] = metrics
            logger.info(format_metrics(metrics))
            confusion_png = plot_confusion_matrix(
                metrics, work_dir / "confusion_matrix.png", f"{run_name(options)} (validation)"
            )

    if data is not None and "validation" in data.splits:
        report["rollout_check"] = rollout_sample(data, fp32_ids, ROLLOUT_TOLERANCE_POINTS[options.quantize])
    texts = _check_texts(data, tokenizer)
    if int8 and (data is None or "validation" not in data.splits):
        raise QuantizationRefused("--quantize int8 needs --data with a validation split to measure its accuracy loss")
    buckets = bucket_parameters(ensemble)
    stages = tqdm(total=3, desc="export", unit="stage", dynamic_ncols=True)
    onnx_folder = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-onnx-"))
    try:
        # From the fp32 model: ONNX Runtime quantizes the exported file itself.
        report["onnx"] = onnx_export.build_onnx(model, tokenizer, texts, max_length, onnx_folder, int8, buckets)
        onnx_file = onnx_folder / "model.onnx"
        stages.update(1)
        started = time.perf_counter()
        if int8:
            scripted, onnx_file = _int8_files(
                model, tokenizer, data, texts, max_length, ensemble, buckets, onnx_folder, report
            )
            title = f"{run_name(options)} int8 (validation)"
            if report["quantization"]["installed"] == "int8":
                confusion_png = plot_confusion_matrix(
                    report["validation"], work_dir / "confusion_matrix_int8.png", title
                )
        else:
            scripted, report["export_check"] = _checked_torchscript(model, tokenizer, texts, max_length, buckets)
        fp32_scripted = None if int8 else scripted
        gpu_scripted, report["gpu_file"] = _gpu_file(
            model,
            tokenizer,
            data,
            texts,
            max_length,
            buckets,
            ensemble.max_batch_size,
            options,
            fp32_scripted,
            fp32_ids,
        )
        stages.update(2)
        stages.close()
        report["export_seconds"] = round(time.perf_counter() - started, 1)
        if serving_server(ensemble.repository) is not None and ensemble.pinned_version() < 0:
            # An unpinned repository serves the newest folder: pinned first, the new one is not served unchecked.
            ensemble.set_served_version(ensemble.served_version)
        version = install(
            ensemble,
            scripted,
            tokenizer,
            label_names,
            max_length,
            report,
            confusion_png,
            onnx_file,
            gpu_scripted,
        )
    finally:
        shutil.rmtree(onnx_folder, ignore_errors=True)
    # The run keeps its own copy: the repository's is removed with its version.
    classifier_dir = ensemble.version_dir(ensemble.classifier, version)
    shutil.copy2(classifier_dir / "build_report.json", work_dir / "build_report.json")
    logger.info(
        "installed version %d: %s (model.pt, model_gpu.pt, model.onnx, build_report.json) and %s",
        version,
        classifier_dir,
        ensemble.version_dir(ensemble.tokenizer, version) / "tokenizer.json",
    )
    if serving_server(ensemble.repository) is None:
        # Nothing serves the repository: the new version is the served one from the next start.
        ensemble.set_served_version(version)
        removed = prune(ensemble)
        logger.info(
            "version %d is the served one (no server serves %s now)%s",
            version,
            ensemble.repository,
            f"; removed old versions {removed}" if removed else "",
        )
    return report


def rollout_sample(data, fp32_ids: list[int], tolerance_points: float) -> dict:
    """The texts, true labels and eager labels a roll-out checks the served version against."""
    split = data.splits["validation"]
    count = min(ROLLOUT_SAMPLE_SIZE, len(split.texts))
    true_ids = data.ids("validation")[:count]
    correct = sum(a == b for a, b in zip(true_ids, fp32_ids[:count], strict=True))
    return {
        "texts": split.texts[:count],
        "labels": [data.label_names[i] for i in true_ids],
        "eager_labels": [data.label_names[i] for i in fp32_ids[:count]],
        "accuracy": correct / count,
        "tolerance_points": tolerance_points,
    }


def _checked_torchscript(model, tokenizer, texts, max_length, buckets) -> tuple:
    """model.pt of `model` and its check against the eager model."""
    scripted = trace(model, tokenizer, texts, max_length, buckets)
    forward = torchscript_export.served_forward(scripted)
    return scripted, check_against_eager(forward, model, tokenizer, texts, max_length)


def _int8_files(model, tokenizer, data, texts, max_length, ensemble, buckets, onnx_folder: Path, report: dict):
    """(model.pt to install, model.onnx to install): each int8 file that passes the gate as served
    (precision_gate), the fp32 one in its place when it does not; QuantizationRefused when neither passes."""
    import torch

    fp32 = report["validation"]
    request_size = ensemble.max_batch_size

    def served(forward):
        predictions = precision_gate.served_predictions(forward, tokenizer, data, max_length, request_size)
        return precision_gate.served_accuracy(predictions, data)

    int8_onnx = onnx_export.open_session(onnx_folder / "model.onnx")
    onnx_gate = precision_gate.check(
        "int8 model.onnx", fp32, served(precision_gate.logits_of(onnx_export.served_forward(int8_onnx, buckets)))
    )
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    scripted, export_check = _checked_torchscript(quantized, tokenizer, texts, max_length, buckets)
    torch_metrics = served(precision_gate.logits_of(torchscript_export.served_forward(scripted)))
    torch_gate = precision_gate.check("int8 model.pt", fp32, torch_metrics)
    if not (onnx_gate["passed"] or torch_gate["passed"]):
        raise QuantizationRefused(
            f"int8 model.onnx loses {onnx_gate['accuracy_loss_points']:.2f} and int8 model.pt "
            f"{torch_gate['accuracy_loss_points']:.2f} points of validation accuracy as served (limit "
            f"{precision_gate.MAX_INT8_ACCURACY_LOSS_POINTS}); nothing was installed"
        )
    onnx_file = onnx_folder / "model.onnx"
    for name, gate in (("model.pt", torch_gate), ("model.onnx", onnx_gate)):
        gate["installed"] = "int8" if gate["passed"] else "fp32"
        if not gate["passed"]:
            logger.warning(
                "int8 %s loses %.2f points as served: %s is installed in fp32, the other file in int8",
                name,
                gate["accuracy_loss_points"],
                name,
            )
    if onnx_gate["passed"]:
        report["onnx"]["precision"] = "int8 dynamic (onnxruntime.quantization.quantize_dynamic, QInt8 weights)"
    else:
        onnx_file = onnx_folder / "model-fp32.onnx"
    report["onnx"]["quantization"] = onnx_gate
    report["quantization"] = {"mode": "int8 dynamic (torch.ao.quantization.quantize_dynamic, Linear layers)"}
    report["quantization"] |= torch_gate
    if torch_gate["passed"]:
        report["validation_fp32"], report["validation"] = fp32, torch_metrics
        report["export_check"] = export_check
    else:
        scripted, report["export_check"] = _checked_torchscript(model, tokenizer, texts, max_length, buckets)
    return scripted, onnx_file


HALF_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def _gpu_file(
    model, tokenizer, data, texts, max_length, buckets, request_size, options, fp32_scripted, fp32_ids
) -> tuple:
    """(model_gpu.pt, its report): the production (GPU) config's file, in options.gpu_precision where that
    passes the half-precision gate (precision_gate.check_half) as served, else the fp32 export."""
    import torch

    fp32_scripted = fp32_scripted or trace(model, tokenizer, texts, max_length, buckets)
    precision = options.gpu_precision
    if precision == "fp32":
        return fp32_scripted, {"precision": "fp32", "installed": "fp32"}
    half = trace(copy.deepcopy(model).to(getattr(torch, HALF_DTYPES[precision])), tokenizer, texts, max_length, buckets)
    report = {"precision": f"{precision} (weights and activations; logits out in fp32)"}
    if data is None or "validation" not in data.splits:
        logger.warning("no validation split to gate the %s model_gpu.pt on: it is installed in fp32", precision)
        return fp32_scripted, {**report, "passed": False, "installed": "fp32", "why": "no validation split"}

    started = time.perf_counter()
    forward = precision_gate.logits_of(torchscript_export.served_forward(half))
    half_predictions = precision_gate.served_predictions(forward, tokenizer, data, max_length, request_size)
    report_fp32 = classification_metrics(data.ids("validation"), fp32_ids, data.label_names)
    gate = precision_gate.check_half(f"{precision} model_gpu.pt", report_fp32, fp32_ids, half_predictions, data)
    gate["gate_seconds"] = round(time.perf_counter() - started, 1)
    if not gate["passed"]:
        logger.warning(
            "%s model_gpu.pt keeps %.2f%% of the fp32 labels and changes the accuracy by %.2f points as served "
            "(limits %.1f%%, %.1f points): model_gpu.pt is installed in fp32",
            precision,
            100 * gate["label_agreement"],
            gate["accuracy_change_points"],
            100 * precision_gate.MIN_HALF_LABEL_AGREEMENT,
            precision_gate.MAX_HALF_ACCURACY_CHANGE_POINTS,
        )
    return (half if gate["passed"] else fp32_scripted), {
        **report,
        **gate,
        "installed": precision if gate["passed"] else "fp32",
    }


def _load_data(source: str, label_names: list[str] | None):
    try:
        return data_module.load(source, label_names)
    except HubUnavailableError as error:
        raise HubUnavailableError(f"{error} with --data") from error


def _check_texts(data, tokenizer) -> list[str]:
    if data is not None:
        split = data.splits.get("validation") or next(iter(data.splits.values()))
        return split.texts[:256]
    # Without data, checks run on the tokenizer's own vocabulary: real tokens, varied lengths.
    vocab = [t for t in tokenizer.get_vocab() if t.isalpha()][:2000]
    return [" ".join(vocab[i : i + 1 + (i % 60)]) for i in range(0, 1200, 37)]


def _versions() -> dict:
    names = ("torch", "transformers", "tokenizers", "numpy", "scikit-learn")
    return {"python": platform.python_version(), **{name: version(name) for name in names}}
