"""Exporting a fine-tuned classifier into the model repository, checked before it is installed.

The exported file is the traced model inside a scripted wrapper that takes Triton's
ragged batches (RaggedClassifier). It must match the eager model (same argmax, max
|logit difference| < 1e-4) on real texts in dynamic batches of several requests,
lengths and paddings; otherwise nothing is written. Installation replaces files
atomically, so a failed build never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import EmotionTritonError
from ..repository import BUILD_OUTPUTS, DEFAULT_REPOSITORY, SOURCE_VERSION, VARIANTS, Ensemble, set_parameter
from ..repository.versions import next_version, remove_version, versions_above_served

# The length-bucketing policy: its one implementation is the classifier's own code, which TorchScript
# compiles into the graph here and the onnx variant's Python step runs as it is.
length_buckets = Ensemble.read(DEFAULT_REPOSITORY).classifier_module("length_buckets")
chunk_ends = length_buckets.chunk_ends

LOGIT_TOLERANCE = 1e-4
# The production (GPU) config's file: half precision where it passed its gate, else fp32 (pipeline.py).
GPU_FILE = VARIANTS["production"].served_file
# Dynamic int8 quantizes the activations of a forward pass with one scale for the whole batch, padding
# included, so an int8 text's logits move with its batch-mates, in the eager model too: the graph must
# equal the eager model exactly for a text alone, and within this in mixed batches (measured on the
# MiniLM fine-tune: 0.21 for 3 short and 2 long texts that eager pads together and the graph does not).
INT8_MIXED_BATCH_TOLERANCE = 0.5


class ExportCheckError(EmotionTritonError, RuntimeError):
    """The TorchScript file does not reproduce the eager model."""


class LogitsOnly(torch.nn.Module):
    """forward(input_ids, attention_mask) -> logits of a padded [rows, width] batch.

    The mask is handed to the model already expanded to 4-D (0 = attend, float min =
    padding). Given a 2-D mask, transformers moves it to `inputs_embeds.device`, which
    tracing records as a constant "cpu": the file would then fail on the GPU.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.dtype = next(model.parameters()).dtype  # fp32, or a half-precision copy's fp16 / bf16

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask[:, None, None, :].to(self.dtype)
        additive = (1.0 - keep) * torch.finfo(self.dtype).min
        return self.model(input_ids=input_ids, attention_mask=additive).logits.float()


class RaggedClassifier(torch.nn.Module):
    """forward(input_ids, attention_mask, row_widths) -> (logits, token_counts): the classifier's config.

    With ragged batching, Triton's libtorch backend hands the graph the [n, width] ids and
    masks of every request of a dynamic batch flattened and concatenated, and `row_widths`
    [rows, 1] (BATCH_ITEM_SHAPE). The graph cuts the rows apart, drops their padding, sorts
    them by length and runs them in the length buckets of the classifier's config
    (length_buckets.chunk_ends), so short texts never pay for long ones; on a GPU with the
    config's gpu_* buckets (by default one padded chunk: there a forward pass costs its launches
    more than its padding).
    `token_counts` is [rows, 2]: each row's real tokens and the tokens computed for it.
    """

    def __init__(
        self,
        classifier: torch.nn.Module,
        num_labels: int,
        pad_token_id: int,
        max_length_spread: float,
        min_length_slack: int,
        max_tokens_per_forward: int,
        gpu_max_length_spread: float = float("inf"),
        gpu_min_length_slack: int = 0,
        gpu_max_tokens_per_forward: int = 1 << 40,
        cpu_only: bool = False,
    ):
        super().__init__()
        self.classifier = classifier
        self.num_labels = num_labels
        self.pad_token_id = pad_token_id
        self.max_length_spread = max_length_spread
        self.min_length_slack = min_length_slack
        self.max_tokens_per_forward = max_tokens_per_forward
        self.gpu_max_length_spread = gpu_max_length_spread
        self.gpu_min_length_slack = gpu_min_length_slack
        self.gpu_max_tokens_per_forward = gpu_max_tokens_per_forward
        self.cpu_only = cpu_only

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, row_widths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = input_ids.device
        if self.cpu_only and input_ids.is_cuda:
            raise RuntimeError(
                "this model.pt is int8 (dynamic quantization), which runs on CPUs only: "
                "serve it with configs/cpu.pbtxt (KIND_CPU) or export it without --quantize"
            )
        widths = row_widths.reshape(-1).to(torch.int64)
        flat_ids, flat_mask = input_ids.reshape(-1), attention_mask.reshape(-1)
        if flat_ids.numel() != flat_mask.numel() or int(widths.sum()) != flat_ids.numel():
            raise ValueError("INPUT_IDS__0, ATTENTION_MASK__1 and ROW_WIDTHS__2 describe different rows")
        rows = widths.numel()
        keep = flat_mask != 0
        row_of_token = torch.repeat_interleave(torch.arange(rows, device=device), widths)
        lengths = torch.zeros(rows, dtype=torch.int64, device=device).index_add_(0, row_of_token, keep.long())
        # The real tokens, row after row, then one pad token that every padded position reads.
        pad = torch.full((1,), self.pad_token_id, dtype=flat_ids.dtype, device=device)
        tokens = torch.cat([flat_ids[keep], pad])
        starts = torch.cumsum(lengths, 0) - lengths
        order = torch.argsort(lengths, stable=True)
        sorted_lengths: list[int] = lengths[order].tolist()
        if input_ids.is_cuda:
            spread, slack, budget = (
                self.gpu_max_length_spread,
                self.gpu_min_length_slack,
                self.gpu_max_tokens_per_forward,
            )
        else:
            spread, slack, budget = self.max_length_spread, self.min_length_slack, self.max_tokens_per_forward
        ends = chunk_ends(sorted_lengths, float(spread), int(slack), int(budget))
        computed = torch.zeros(rows, dtype=torch.int64, device=device)
        chunks: list[torch.Tensor] = []
        begin = 0
        for end in ends:
            # Sorted ascending: a chunk's last row is its longest.
            width = max(sorted_lengths[end - 1], 1)
            members = order[begin:end]
            positions = torch.arange(width, device=device)
            real = positions[None, :] < lengths[members][:, None]
            ids = tokens[torch.where(real, starts[members][:, None] + positions[None, :], tokens.numel() - 1)]
            chunks.append(self.classifier(ids, real.long()))
            computed[members] = width
            begin = end
        logits = torch.zeros((rows, self.num_labels), dtype=torch.float32, device=device)
        if rows:
            logits[order] = torch.cat(chunks).to(torch.float32)
        return logits, torch.stack([lengths, computed], 1)


def _is_quantized(model: torch.nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def bucket_parameters(ensemble: Ensemble) -> dict:
    """The length buckets of the classifier's production config, on the CPU and (gpu_*) on a GPU:
    RaggedClassifier's keyword arguments."""
    parameters = {key: value.string_value for key, value in ensemble.config(ensemble.classifier).parameters.items()}
    found = {}
    for prefix in ("", "gpu_"):
        buckets = length_buckets.LengthBuckets(parameters, prefix)
        found |= {prefix + key: getattr(buckets, key) for key in length_buckets.LengthBuckets.KEYS}
    return found


def trace(
    model: torch.nn.Module, tokenizer, example_texts: list[str], max_length: int, buckets: dict
) -> torch.jit.ScriptModule:
    """The exported classifier: the traced model inside the scripted ragged-batch wrapper, frozen.

    `buckets`: RaggedClassifier's length buckets (bucket_parameters), applied on the CPU.
    """
    inner = LogitsOnly(model).eval()
    # Trace with padded rows so the traced graph keeps the attention mask path.
    example = tokenizer(example_texts[:4], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(inner, (example["input_ids"], example["attention_mask"]), strict=False)
        wrapper = RaggedClassifier(
            traced, model.config.num_labels, tokenizer.pad_token_id, cpu_only=_is_quantized(model), **buckets
        )
        frozen = torch.jit.freeze(torch.jit.script(wrapper.eval()))
    devices = sorted(set(re.findall(r': Device = prim::Constant\[value="([^"]+)"\]', str(frozen.inlined_graph))))
    if devices:
        raise ExportCheckError(
            f"the traced model hard-codes the device(s) {devices}; it would not run on another device"
        )
    return frozen


def ragged_batch(requests: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the libtorch backend hands forward() for a dynamic batch of tokenized requests.

    Each request is {"input_ids": [n, width], "attention_mask": [n, width]}; returns the
    flattened, concatenated ids and masks and the [rows, 1] int32 row widths.
    """
    ids = torch.cat([torch.as_tensor(r["input_ids"]).reshape(-1) for r in requests])
    mask = torch.cat([torch.as_tensor(r["attention_mask"]).reshape(-1) for r in requests])
    widths = [torch.full((len(r["input_ids"]), 1), len(r["input_ids"][0]), dtype=torch.int32) for r in requests]
    return ids.long(), mask.long(), torch.cat(widths)


def _spaced(texts: list[str]) -> list[str]:
    by_length = sorted(texts, key=len)
    return by_length[:: max(1, len(by_length) // 16)][:16]


def parity_cases(texts: list[str]) -> list[list[list[str]]]:
    """Dynamic batches to check an export on: each a list of requests, each a list of texts."""
    by_length = sorted(texts, key=len)
    spaced = _spaced(texts)
    too_long = by_length[-1] + " " + by_length[-1]  # past max_length: exercises truncation
    return [
        [by_length[:1]],  # one text, no padding
        [by_length[-1:]],
        [[too_long]],
        [by_length[:3] + by_length[-2:]],  # one request padded to its longest text
        [[text] for text in spaced],  # single-text requests of every length: several chunks
        [spaced[:4], [too_long] * 2, spaced[4:5], spaced[-3:]],  # mixed requests, truncation
    ]


def served_forward(scripted):
    """forward(tokenized requests) -> (logits, token_counts) of one dynamic batch, as the libtorch backend runs it."""

    def forward(requests: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return scripted(*ragged_batch(requests))

    return forward


def check_against_eager(
    forward, model, tokenizer, texts: list[str], max_length: int, what: str = "TorchScript"
) -> dict:
    """Compares an exported file, run as the server runs it, with the eager model; raises ExportCheckError on a mismatch.

    `forward(requests)` -> (logits, token_counts) of one dynamic batch (served_forward here, or
    onnx_export.served_forward). Each case is a dynamic batch as Triton builds it: requests of one or
    more texts, each padded to its own longest text.
    """
    model.eval()
    quantized = _is_quantized(model)
    cases = parity_cases(texts)
    if quantized:  # every text alone too: the one layout where int8 must match exactly
        cases += [[[text]] for text in _spaced(texts)]
    worst, worst_mixed, checked = 0.0, 0.0, 0
    with torch.no_grad():
        for case in cases:
            requests = [
                tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
                for batch in case
            ]
            eager = torch.cat(
                [model(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits for r in requests]
            )
            got, token_counts = (torch.as_tensor(output) for output in forward(requests))
            real = torch.cat([r["attention_mask"].sum(1) for r in requests])
            diff = float((got - eager).abs().max())
            checked += len(real)
            width = max(int(r["input_ids"].shape[1]) for r in requests)
            alone = len(real) == 1
            if quantized and not alone:
                worst_mixed = max(worst_mixed, diff)
                wrong = diff >= INT8_MIXED_BATCH_TOLERANCE
            else:
                worst = max(worst, diff)
                wrong = diff >= LOGIT_TOLERANCE or not torch.equal(got.argmax(1), eager.argmax(1))
            if wrong:
                limit = INT8_MIXED_BATCH_TOLERANCE if quantized and not alone else LOGIT_TOLERANCE
                raise ExportCheckError(
                    f"{what} differs from the eager model on a batch of {len(real)} texts in {len(case)} "
                    f"requests of up to {width} tokens: max |logit difference| {diff:.2e} "
                    f"(limit {limit:.0e}); nothing was installed"
                )
            if not torch.equal(token_counts[:, 0], real) or bool((token_counts[:, 1] < real).any()):
                raise ExportCheckError(
                    f"{what} counts {token_counts[:, 0].tolist()} real tokens per text instead of "
                    f"{real.tolist()}; nothing was installed"
                )
    if quantized:
        return {
            "texts_checked": checked,
            "max_abs_logit_difference": worst,
            "tolerance": LOGIT_TOLERANCE,
            "max_abs_logit_difference_mixed_batches": worst_mixed,
            "tolerance_mixed_batches": INT8_MIXED_BATCH_TOLERANCE,
        }
    return {"texts_checked": checked, "max_abs_logit_difference": worst, "tolerance": LOGIT_TOLERANCE}


def tokenizer_json(tokenizer) -> str:
    """The tokenizer as one tokenizer.json, with padding set so the server knows the pad token."""
    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()  # the tokenizer model applies its configured max_length
    backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    return backend.to_str()


STAGING_PREFIX = "emotion-export-"


def remove_stale_staging(repository: Path) -> None:
    """Staging folders of builds that were killed: in the temp folder, in the models' folders (a new
    version being assembled) and (older builds) in the repository."""
    import psutil

    for folder in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX) :].split("-")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    for folder in [*Path(repository).glob(".staging-*"), *Path(repository).glob("*/.staging-*")]:
        shutil.rmtree(folder, ignore_errors=True)


def check_same_contract(ensemble: Ensemble, label_names: list[str], max_length: int) -> None:
    """A new version beside built ones must keep their labels and max_length: both are parameters of
    the models' configs (emotion_postprocess, emotion_tokenizer), shared by every version."""
    if not ensemble.built_versions():
        return
    if label_names != ensemble.labels:
        raise ValueError(
            f"the new model's labels {label_names} differ from those of the versions in {ensemble.repository} "
            f"({ensemble.labels}), which every version shares: build into a new repository (--repository)"
        )
    if max_length != ensemble.max_length:
        raise ValueError(
            f"--max_length {max_length} differs from the versions' in {ensemble.repository} ({ensemble.max_length}), "
            "which every version shares: build with that length or into a new repository (--repository)"
        )


def install(
    ensemble: Ensemble,
    scripted: torch.jit.ScriptModule,
    tokenizer,
    label_names: list[str],
    max_length: int,
    report: dict,
    confusion_png: Path | None = None,
    onnx_model: Path | None = None,
    gpu_scripted: torch.jit.ScriptModule | None = None,
) -> int:
    """Installs a new version: model.pt (and model.onnx, and model_gpu.pt: the production config's file),
    tokenizer.json and the build report beside the versions already there (repository.versions.next_version),
    with labels and max_length. Returns it.

    The served version (the ensemble's pin) is left as it is. A new folder is assembled under a hidden
    name in the model's folder (Triton takes only numbered folders for versions) with a copy of the
    code of SOURCE_VERSION, and renamed into place: a version folder is never seen half written.
    """
    check_same_contract(ensemble, label_names, max_length)
    remove_stale_staging(ensemble.repository)
    version = next_version(ensemble)
    # Versions above the served one were rolled back from, refused or left by a killed build. Only the
    # two newest folders load: the new one and the served one must be those.
    for above in versions_above_served(ensemble):
        remove_version(ensemble, above)
    report["version"] = version
    # Outside the repository: tritonserver loads every folder in it as a model, and a build killed
    # here (SIGKILL, out of memory) must not leave one behind.
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
    try:
        scripted_files = {"model.pt": scripted} | ({GPU_FILE: gpu_scripted} if gpu_scripted is not None else {})
        for name, module in scripted_files.items():
            torch.jit.save(module, staging / name)
            torch.jit.load(staging / name)  # a file that cannot load back is never installed
        (staging / "tokenizer.json").write_text(tokenizer_json(tokenizer))
        (staging / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
        # model -> (file, its name in the version folder)
        files = {
            ensemble.classifier: [
                *((staging / name, name) for name in scripted_files),
                (staging / "build_report.json", "build_report.json"),
            ],
            ensemble.tokenizer: [(staging / "tokenizer.json", "tokenizer.json")],
        }
        if onnx_model is not None:
            files[ensemble.classifier].append((Path(onnx_model), "model.onnx"))
        if confusion_png is not None:
            files[ensemble.classifier].append((Path(confusion_png), "confusion_matrix.png"))
        folders = {model: ensemble.version_dir(model, version) for model in files}
        if all(folder.is_dir() for folder in folders.values()):  # SOURCE_VERSION: its code is there already
            moves = [(source, folders[model] / name) for model, sources in files.items() for source, name in sources]
            for source, target in moves:
                shutil.copyfile(source, target.with_name(target.name + ".tmp"))
            for _, target in moves:
                os.replace(target.with_name(target.name + ".tmp"), target)
        else:
            for model, sources in files.items():
                assembled = ensemble.repository / model / f".staging-{version}"
                shutil.rmtree(assembled, ignore_errors=True)
                code = ensemble.version_dir(model, SOURCE_VERSION)
                shutil.copytree(code, assembled, ignore=shutil.ignore_patterns(*BUILD_OUTPUTS))
                for source, name in sources:
                    shutil.copyfile(source, assembled / name)
            for model in files:
                os.rename(ensemble.repository / model / f".staging-{version}", folders[model])
        if not ensemble.built_versions()[:-1]:  # the first version: the configs take its labels and length
            set_parameter(ensemble.config_path(ensemble.postprocess), "labels", json.dumps(label_names))
            set_parameter(ensemble.config_path(ensemble.tokenizer), "max_length", str(max_length))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version
