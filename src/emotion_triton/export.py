"""Exporting a fine-tuned classifier into the model repository, checked before it is installed.

The TorchScript file must match the eager model (same argmax, max |logit
difference| < 1e-4) on real texts at several batch sizes and lengths, with and
without padding; otherwise nothing is written. Installation replaces files
atomically, so a failed build never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .repository import Ensemble, set_parameter

LOGIT_TOLERANCE = 1e-4


class ExportCheckError(RuntimeError):
    """The TorchScript file does not reproduce the eager model."""


class LogitsOnly(torch.nn.Module):
    """forward(input_ids, attention_mask) -> logits: the signature of the classifier's config.

    The mask is handed to the model already expanded to 4-D (0 = attend, float min =
    padding). Given a 2-D mask, transformers moves it to `inputs_embeds.device`, which
    tracing records as a constant "cpu": the file would then fail on the GPU.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask[:, None, None, :].to(torch.float32)
        additive = (1.0 - keep) * torch.finfo(torch.float32).min
        return self.model(input_ids=input_ids, attention_mask=additive).logits


def trace(model: torch.nn.Module, tokenizer, example_texts: list[str], max_length: int) -> torch.jit.ScriptModule:
    wrapper = LogitsOnly(model).eval()
    # Trace with padded rows so the traced graph keeps the attention mask path.
    example = tokenizer(example_texts[:4], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(wrapper, (example["input_ids"], example["attention_mask"]), strict=False)
        frozen = torch.jit.freeze(traced.eval())
    devices = sorted(set(re.findall(r': Device = prim::Constant\[value="([^"]+)"\]', str(frozen.inlined_graph))))
    if devices:
        raise ExportCheckError(
            f"the traced model hard-codes the device(s) {devices}; it would not run on another device"
        )
    return frozen


def check_against_eager(scripted, model, tokenizer, texts: list[str], max_length: int) -> dict:
    """Compares the TorchScript module with the eager model; raises ExportCheckError on a mismatch."""
    model.eval()
    by_length = sorted(texts, key=len)
    # Shortest, longest and mixed texts; batches of 1 (no padding) up to 16 (much padding).
    cases = [
        by_length[:1],
        by_length[-1:],
        by_length[:3] + by_length[-2:],
        by_length[:: max(1, len(by_length) // 16)][:16],
    ]
    cases.append([by_length[-1] + " " + by_length[-1]] * 2)  # past max_length: exercises truncation
    worst, checked = 0.0, 0
    with torch.no_grad():
        for batch in cases:
            enc = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            eager = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            got = scripted(enc["input_ids"], enc["attention_mask"])
            diff = float((got - eager).abs().max())
            worst = max(worst, diff)
            checked += len(batch)
            if diff >= LOGIT_TOLERANCE or not torch.equal(got.argmax(1), eager.argmax(1)):
                raise ExportCheckError(
                    f"TorchScript differs from the eager model on a batch of {len(batch)} texts of up to "
                    f"{enc['input_ids'].shape[1]} tokens: max |logit difference| {diff:.2e} "
                    f"(limit {LOGIT_TOLERANCE:.0e}); nothing was installed"
                )
    return {"texts_checked": checked, "max_abs_logit_difference": worst, "tolerance": LOGIT_TOLERANCE}


def tokenizer_json(tokenizer) -> str:
    """The tokenizer as one tokenizer.json, with padding set so the server knows the pad token."""
    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()  # the tokenizer model applies its configured max_length
    backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    return backend.to_str()


def install(
    ensemble: Ensemble,
    scripted: torch.jit.ScriptModule,
    tokenizer,
    label_names: list[str],
    max_length: int,
    report: dict,
    confusion_png: Path | None = None,
) -> None:
    """Writes model.pt, tokenizer.json, labels, max_length and the build report into the repository."""
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=ensemble.repository))
    try:
        torch.jit.save(scripted, staging / "model.pt")
        torch.jit.load(staging / "model.pt")  # a file that cannot load back is never installed
        (staging / "tokenizer.json").write_text(tokenizer_json(tokenizer))
        (staging / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
        moves = [
            (staging / "model.pt", ensemble.model_file),
            (staging / "tokenizer.json", ensemble.tokenizer_file),
            (staging / "build_report.json", ensemble.report_file),
        ]
        if confusion_png is not None:
            moves.append((Path(confusion_png), ensemble.report_file.with_name("confusion_matrix.png")))
        for source, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target.with_name(target.name + ".tmp"))
        for _, target in moves:
            os.replace(target.with_name(target.name + ".tmp"), target)
        set_parameter(ensemble.config_path(ensemble.postprocess), "labels", json.dumps(label_names))
        set_parameter(ensemble.config_path(ensemble.tokenizer), "max_length", str(max_length))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def output_width(path: Path, vocab_size: int = 100) -> int:
    """Number of logits the TorchScript file returns for one short text."""
    model = torch.jit.load(str(path), map_location="cpu")
    ids = torch.tensor([[min(2, vocab_size - 1)] * 4])
    with torch.no_grad():
        return int(np.asarray(model(ids, torch.ones_like(ids))).shape[1])
