"""The classifier as ONNX, for ONNX Runtime on CPUs, checked before it is installed.

model.onnx is the same fine-tuned model as model.pt behind the same ragged-batch interface as the
classifier's config.pbtxt (RaggedRows): Triton's ONNX Runtime backend (configs/onnxruntime.pbtxt) hands
it a dynamic batch's requests flattened and concatenated, with each row's width; the Python-backend
variant (emotion_classifier/1/onnx_model.py) cuts requests into chunks of similar length first and
hands it one chunk at a time. fp32 must match the eager model (max |logit difference| < 1e-4, same
argmax) on the same dynamic batches as model.pt's check; int8 is ONNX Runtime's dynamic quantization
of that file, refused when it loses more validation accuracy than the int8 limit.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import torch

from . import torchscript_export
from .modeling import sorted_batch_logits
from .torchscript_export import LogitsOnly, ragged_batch

# The classifier config's tensor names (config.pbtxt): the ONNX Runtime backend matches them by name.
INPUT_NAMES = ["INPUT_IDS__0", "ATTENTION_MASK__1", "ROW_WIDTHS__2"]
OUTPUT_NAMES = ["LOGITS__0", "TOKEN_COUNTS__1"]
OPSET = 17


class RaggedRows(torch.nn.Module):
    """forward(input_ids [tokens], attention_mask [tokens], row_widths [rows, 1]) -> (logits, token_counts).

    Triton's ragged batch as the classifier's config declares it: every request's [n, width] ids and
    mask flattened and concatenated, and each row's width. The graph drops every row's padding, sorts
    the rows by length and runs them in `chunks` runs of the model, each padded to its own longest row
    (a batch of fewer rows runs once: a run costs a short text about as much as the text itself).
    Scripted, so that the choice is an ONNX `If` and every run shares the weights.
    `token_counts` is [rows, 2]: each row's real tokens and the tokens computed for it. A row holding
    a token id outside the vocabulary gets NaN logits (which the postprocess refuses for its request
    alone) instead of failing the whole batch in the embedding lookup.
    """

    def __init__(self, logits: torch.nn.Module, pad_token_id: int, vocab_size: int, chunks: int = 4):
        super().__init__()
        self.logits = logits
        self.pad_token_id = pad_token_id
        self.vocab_size = vocab_size
        self.chunks = chunks

    def _run(self, tokens, starts, lengths):
        """Logits and computed tokens of rows (`starts` into `tokens`, `lengths`) padded to their longest."""
        width = lengths.max()
        positions = torch.arange(width)
        real = positions[None, :] < lengths[:, None]
        ids = tokens[torch.where(real, starts[:, None] + positions[None, :], tokens.shape[0] - 1)]
        unknown = (ids < 0) | (ids >= self.vocab_size)
        ids = torch.where(unknown, torch.full_like(ids, self.pad_token_id), ids)
        # [rows, labels] with the label count left unknown to shape inference: the classifier's config
        # leaves it to the postprocess's labels, and Triton's ONNX Runtime backend refuses a graph
        # output of a fixed width against the config's -1.
        logits = self.logits(ids, real.to(torch.int64)).reshape(lengths.shape[0], -1)
        logits = torch.where(unknown.any(1, keepdim=True), torch.full_like(logits, float("nan")), logits)
        return logits, width.expand(lengths.shape[0])

    def forward(self, input_ids, attention_mask, row_widths):
        widths = row_widths.reshape(-1).to(torch.int64)
        keep = attention_mask != 0
        kept = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(keep.to(torch.int64), 0)])
        ends = torch.cumsum(widths, 0)
        lengths = kept[ends] - kept[ends - widths]
        # The real tokens, row after row, then one pad token that every padded position reads.
        tokens = torch.cat([input_ids[keep], torch.full((1,), self.pad_token_id, dtype=input_ids.dtype)])
        starts = torch.cumsum(lengths, 0) - lengths
        rows = lengths.shape[0]
        if rows < self.chunks:
            logits, computed = self._run(tokens, starts, lengths)
        else:
            order = torch.argsort(lengths)
            logits_parts, computed_parts = [], []
            for chunk in range(self.chunks):
                members = order[rows * chunk // self.chunks : rows * (chunk + 1) // self.chunks]
                part, part_computed = self._run(tokens, starts[members], lengths[members])
                logits_parts.append(part)
                computed_parts.append(part_computed)
            inverse = torch.argsort(order)
            logits = torch.cat(logits_parts)[inverse]
            computed = torch.cat(computed_parts)[inverse]
        return logits, torch.stack([lengths, computed], 1)


def export(model: torch.nn.Module, tokenizer, example_texts: list[str], max_length: int, path: Path) -> None:
    """Writes the fp32 eager model inside RaggedRows to `path`, tokens and rows dynamic."""
    requests = [
        tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        for texts in (example_texts[:3], example_texts[3:4])
    ]
    axes = {"INPUT_IDS__0": {0: "tokens"}, "ATTENTION_MASK__1": {0: "tokens"}, "ROW_WIDTHS__2": {0: "rows"}}
    axes |= {name: {0: "rows"} for name in OUTPUT_NAMES}
    padded = tokenizer(example_texts[:4], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        traced = torch.jit.trace(
            LogitsOnly(model).eval(), (padded["input_ids"], padded["attention_mask"]), strict=False
        )
        graph = torch.jit.script(RaggedRows(traced, tokenizer.pad_token_id, model.config.vocab_size).eval())
        # The TorchScript-based exporter: the dynamo exporter needs onnxscript, which is not installed.
        torch.onnx.export(
            graph,
            ragged_batch(requests),
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic int8 quantization: int8 weights, activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weights_inlined = target.with_name(f"{target.stem}.weights-inlined.onnx")
    model = onnx.load(str(source))
    inline_weight_identities(model)
    onnx.save(model, str(weights_inlined))
    try:
        # EnableSubgraph: the model runs inside the graph's If branches, which the quantizer skips by default.
        quantize_dynamic(
            str(weights_inlined), str(target), weight_type=QuantType.QInt8, extra_options={"EnableSubgraph": True}
        )
    finally:
        weights_inlined.unlink(missing_ok=True)


def inline_weight_identities(model) -> None:
    """Points every use of an `Identity` of a weight at the weight itself, in the subgraphs too.

    The exporter gives each further call of the same module (the 4 chunks' runs) such an Identity per
    weight, and the quantizer quantizes a MatMul only when its weight is an initializer: without this
    the chunked branch stayed fp32 (8 of 200 MatMuls quantized; in-process int8 285 texts/s against
    365 with it, fp32 303, 2026-12-07)."""
    weights = {initializer.name for initializer in model.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in weights}
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    del model.graph.node[:]
    model.graph.node.extend(kept)

    def rename(graph) -> None:
        for node in graph.node:
            node.input[:] = [alias.get(name, name) for name in node.input]
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    rename(attribute.g)
        for output in graph.output:
            if output.name in alias:
                raise ValueError(f"graph output {output.name} is an Identity of a weight")

    rename(model.graph)


def session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the graph's If makes the optimizer warn per subgraph input
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_ragged(onnx_session, input_ids, attention_mask, row_widths) -> tuple[np.ndarray, np.ndarray]:
    """(logits, token_counts) of one ragged batch, fed as Triton's ONNX Runtime backend feeds it."""
    ids, mask, widths = INPUT_NAMES
    feed = {ids: np.asarray(input_ids, np.int64), mask: np.asarray(attention_mask, np.int64)}
    feed[widths] = np.asarray(row_widths, np.int32)
    logits, token_counts = onnx_session.run(OUTPUT_NAMES, feed)
    return logits, token_counts


def run(onnx_session, input_ids, attention_mask) -> np.ndarray:
    """The logits of a padded [rows, width] batch (one request of that many texts)."""
    input_ids = np.asarray(input_ids)
    widths = np.full((input_ids.shape[0], 1), input_ids.shape[1], np.int32)
    return run_ragged(onnx_session, input_ids.reshape(-1), np.asarray(attention_mask).reshape(-1), widths)[0]


def predict_logits(onnx_session, tokenizer, texts: list[str], max_length: int, num_labels: int) -> np.ndarray:
    """Logits in the order of `texts`, in length-sorted batches (as modeling.predict_logits)."""
    return sorted_batch_logits(partial(run, onnx_session), tokenizer, texts, max_length, num_labels)


def check_against_eager(onnx_session, model, tokenizer, texts: list[str], max_length: int) -> dict:
    """model.pt's check (the same dynamic batches and limits) on the fp32 file."""

    def forward(*ragged) -> tuple[torch.Tensor, torch.Tensor]:
        logits, token_counts = run_ragged(onnx_session, *ragged)
        return torch.from_numpy(logits), torch.from_numpy(token_counts)

    return torchscript_export.check_against_eager(forward, model, tokenizer, texts, max_length, "model.onnx")


def build_onnx(model, tokenizer, texts: list[str], max_length: int, folder: Path, int8: bool) -> dict:
    """Writes folder/model.onnx (fp32, or int8 from the checked fp32 file, kept as model-fp32.onnx); returns its report.

    `model` is the fp32 eager model. The int8 accuracy gate is the caller's (it has the data).
    """
    started = time.perf_counter()
    fp32 = folder / "model-fp32.onnx"
    export(model, tokenizer, texts, max_length, fp32)
    report = {
        "precision": "fp32",
        "export_check": check_against_eager(session(fp32), model, tokenizer, texts, max_length),
    }
    target = folder / "model.onnx"
    if int8:  # the fp32 file stays beside it: installed instead if the int8 one fails the gate
        quantize_int8(fp32, target)
    else:
        fp32.replace(target)
    report["export_seconds"] = round(time.perf_counter() - started, 1)
    return report
