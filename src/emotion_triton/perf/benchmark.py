"""The benchmark: our served ensemble against what users would run instead, in ONE run.

    python -m emotion_triton.benchmark --checkpoint runs/minilm-offline/checkpoint   (make bench)

Same machine, same fine-tuned weights, same texts for every system:
- in-process: the HF `pipeline` at each batch size, the eager model with length-sorted
  batches, and ONNX Runtime (fp32 and int8, the repository's own model.onnx, as many threads as
  cores): the fastest CPU runtime, the reference the served variants are held to;
- served: our ensemble with each classifier variant (libtorch: the production config on
  Triton's PyTorch backend, CPU instances; python: the same model.pt in a Python-backend
  model), fp32 and int8 unless --no-int8, over gRPC under a closed-loop asyncio load
  generator, a sweep over concurrency and request batch size, with the time of each ensemble
  step from Triton's per-model statistics;
- a plain FastAPI + `pipeline` server, one text per call, under the same load generator.
Writes results.json, results.md and PNG plots into --results, and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import data as data_module
from ..build.modeling import checkpoint_labels, load_classifier, load_tokenizer, predict_logits
from ..build.pipeline import BuildOptions, build
from ..evaluation.server_accuracy import EvaluationOptions, evaluate_served, read_labelled
from ..hub import ModelSourceError
from ..repository import CLASSIFIER_CONFIGS, PROJECT_ROOT, Ensemble, copy_sources
from ..serving.local_server import DEFAULT_CLASSIFIER, LocalServer, ServerOptions
from ..serving.preflight import free_port
from ..serving.prometheus import COMPUTED_TOKENS, REAL_TOKENS, metric_total, triton_metrics
from .baselines import load_pipeline, measure_onnx_runtime, measure_pipeline, measure_sorted_eager
from .loadgen import closed_loop, json_http_sender, triton_grpc_sender

logger = logging.getLogger(__name__)
DEFAULT_DATA = str(data_module.EMOTION_VALIDATION_FILE)


@dataclass
class BenchOptions:
    checkpoint: Path
    data: str = DEFAULT_DATA
    results: Path = PROJECT_ROOT / "results" / "bench"
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    fastapi_concurrency: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    seconds: float = 5.0
    in_process_texts: int = 1000
    lone_requests: int = 300
    int8: bool = True
    fastapi: bool = True
    classifiers: list[str] = field(default_factory=lambda: list(CLASSIFIER_CONFIGS))


def server_side(before: dict, after: dict, classifier: str) -> dict:
    """The classifier's dynamic batching (Triton's inference_count / execution_count), queueing and
    padding efficiency (real / computed tokens, counted by the postprocess step) between two scrapes."""

    def delta(name: str, model: str | None = classifier) -> float:
        return metric_total(after, name, model) - metric_total(before, name, model)

    executions, requests = delta("nv_inference_exec_count"), delta("nv_inference_request_success")
    computed = delta(COMPUTED_TOKENS, None)
    return {
        "avg_dynamic_batch": delta("nv_inference_count") / executions if executions else None,
        "queue_ms": delta("nv_inference_queue_duration_us") / requests / 1000 if requests else None,
        "padding_efficiency": delta(REAL_TOKENS, None) / computed if computed else None,
    }


STEP_TIMES = ("queue", "compute_input", "compute_infer", "compute_output")


def model_statistics(server: LocalServer) -> dict[str, dict]:
    """Triton's cumulative per-model statistics (/v2/models/stats), by model name."""
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/stats", timeout=10) as response:
        return {m["name"]: m["inference_stats"] for m in json.load(response)["model_stats"]}


def step_times(before: dict, after: dict) -> dict[str, dict]:
    """Milliseconds per successful request of each model between two statistics snapshots.

    `total` is Triton's success duration, from the request's arrival at that model to its release;
    for the ensemble it is the whole server-side time. A step's compute_output ends after the
    ensemble has passed its outputs on and the next step has started, so the steps' totals overlap:
    a step's own time is queue + compute_input + compute_infer, and the hand-overs are the
    ensemble's total minus those.
    """
    steps = {}
    for model, stats in after.items():
        requests = stats["success"]["count"] - before[model]["success"]["count"]
        if requests:

            def ms(field: str, stats=stats, model=model, requests=requests) -> float:
                return (stats[field]["ns"] - before[model][field]["ns"]) / requests / 1e6

            steps[model] = {"requests": requests, "total": ms("success"), **{f: ms(f) for f in STEP_TIMES}}
    return steps


def ensemble_sender(server: LocalServer):
    """A factory of gRPC senders for the served ensemble, its tensor names read from its config."""
    ensemble = server.ensemble
    return partial(triton_grpc_sender, server.grpc_url, ensemble.name, ensemble.text_input, list(ensemble.outputs))


def sweep_triton(server: LocalServer, texts: list[str], options: BenchOptions, system: str) -> list[dict]:
    sender = ensemble_sender(server)
    points = []
    grid = [(b, c) for b in options.batch_sizes for c in options.concurrency]
    for batch_size, concurrency in tqdm(grid, desc=system, unit="point", dynamic_ncols=True):
        before = triton_metrics(server.metrics_url)
        result = asyncio.run(_measure(sender, texts, concurrency, batch_size, options.seconds))
        point = {
            "system": system,
            **result.as_dict(),
            **server_side(before, triton_metrics(server.metrics_url), server.ensemble.classifier),
        }
        points.append(point)
    return points


def lone_requests(server: LocalServer, texts: list[str], system: str, count: int, warmup: int = 30) -> dict:
    """`count` one-text requests one after another; the client's times and Triton's per-model
    statistics over exactly those requests (snapshots after the warm-up and after the last answer)."""

    async def send_all() -> tuple[dict, list[float]]:
        send, close = ensemble_sender(server)()
        try:
            for text in texts[:warmup]:
                await send([text])
            before, latencies = model_statistics(server), []
            for text in tqdm(texts[:count], desc=f"{system} lone requests", unit="request", leave=False):
                started = time.perf_counter()
                await send([text])
                latencies.append((time.perf_counter() - started) * 1000)
            return before, latencies
        finally:
            await close()

    before, latencies = asyncio.run(send_all())
    return {
        "system": system,
        "requests": len(latencies),
        "p50_ms": float(np.percentile(latencies, 50)),
        "mean_ms": float(np.mean(latencies)),
        "steps": step_times(before, model_statistics(server)),
    }


def eager_reference(model, tokenizer, data: str, max_length: int) -> dict:
    """The fp32 eager model on every text of `data`, read as the evaluation client reads it:
    its label for each text, and its accuracy (the reference of the 0.5-point accuracy gate)."""
    rows = read_labelled(data)
    names = checkpoint_labels(model)
    labels = [names[i] for i in predict_logits(model, tokenizer, rows.texts, max_length).argmax(axis=1)]
    correct = sum(label == truth for label, truth in zip(labels, rows.labels, strict=True))
    return {"labels": labels, "accuracy": correct / len(labels)}


def served_accuracy(server: LocalServer, data: str, eager: dict) -> dict:
    """Accuracy through the server over all of `data`, and how often its labels are the eager fp32 model's."""
    report = evaluate_served(EvaluationOptions(source=data, url=server.grpc_url, concurrency=4, progress=False))
    predicted = [row["predicted"] for row in report["predictions"]]
    same = [p == e for p, e in zip(predicted, eager["labels"], strict=True) if p is not None]
    accuracy = report["metrics"]["accuracy"]
    return {
        "texts": report["texts"],
        "answered": report["answered"],
        "accuracy": accuracy,
        "accuracy_loss_points": 100 * (eager["accuracy"] - accuracy),
        "label_agreement_with_eager_fp32": sum(same) / len(same),
    }


async def _measure(make_sender, texts, concurrency, batch_size, seconds):
    send, close = make_sender()  # clients bind to the running event loop: create them inside it
    try:
        return await closed_loop(send, texts, concurrency, batch_size, seconds)
    finally:
        await close()


def serve_repository(repository: Path, workdir: Path, classifier: str = DEFAULT_CLASSIFIER) -> LocalServer:
    options = ServerOptions(
        repository=repository,
        classifier=classifier,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_file=workdir / f"tritonserver-{repository.name}-{classifier}.log",
    )
    server = LocalServer(options)
    server.start()
    return server


def export_repository(checkpoint: Path, data: str, target: Path, quantize: str) -> Path:
    import shutil

    if target.exists():
        shutil.rmtree(target)
    copy_sources(target)
    build(
        BuildOptions(
            finetuned=str(checkpoint),
            data=data,
            repository=target,
            quantize=quantize,
            output_dir=target.parent / f"run-{target.name}",
        )
    )
    return target


def sweep_fastapi(checkpoint: Path, texts: list[str], options: BenchOptions, max_length: int) -> list[dict]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emotion_triton.perf.baselines",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(port),
            "--max-length",
            str(max_length),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        points = []
        for concurrency in tqdm(options.fastapi_concurrency, desc="fastapi+pipeline", unit="point"):
            sender = partial(json_http_sender, f"http://127.0.0.1:{port}/classify")
            result = asyncio.run(_measure(sender, texts, concurrency, 1, options.seconds))
            points.append({"system": "fastapi+pipeline", **result.as_dict()})
        return points
    finally:
        process.terminate()
        process.wait(30)


def run(options: BenchOptions) -> dict:
    options.results.mkdir(parents=True, exist_ok=True)
    texts = data_module.load(options.data).splits["validation"].texts
    subset = texts[: options.in_process_texts]
    checkpoint = str(options.checkpoint)
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "checkpoint": checkpoint,
        "data": options.data,
        "texts": len(texts),
        "in_process_texts": len(subset),
        "seconds_per_point": options.seconds,
    }

    tokenizer = load_tokenizer(checkpoint, "--checkpoint")
    model = load_classifier(checkpoint, "--checkpoint").eval()
    fp32_repository = export_repository(options.checkpoint, options.data, options.results / "repo-fp32", "none")
    ensemble = Ensemble.read(fp32_repository)
    max_length = ensemble.max_length
    results["ensemble"], results["ensemble_steps"] = ensemble.name, ensemble.steps

    logger.info("in-process: HF pipeline and length-sorted eager model")
    pipeline = load_pipeline(checkpoint, max_length)
    measure_pipeline(pipeline, subset[:64], 8)  # warm-up
    results["pipeline"] = [measure_pipeline(pipeline, subset, bs) for bs in tqdm([1, 8, 32, 64], desc="pipeline")]
    measure_sorted_eager(model, tokenizer, subset[:64], max_length)
    results["sorted_eager"] = measure_sorted_eager(model, tokenizer, subset, max_length)
    del pipeline

    repositories = [("fp32", fp32_repository)]
    if options.int8:
        int8_repository = export_repository(options.checkpoint, options.data, options.results / "repo-int8", "int8")
        repositories.append(("int8", int8_repository))
    logger.info("in-process: ONNX Runtime on the repositories' model.onnx, %d threads", os.cpu_count())
    results["onnx_runtime"] = [
        {"precision": precision}
        | measure_onnx_runtime(Ensemble.read(repository).onnx_file, tokenizer, subset, max_length, os.cpu_count())
        for precision, repository in tqdm(repositories, desc="onnxruntime")
    ]

    eager = eager_reference(model, tokenizer, options.data, max_length)
    results["eager_fp32_accuracy"] = eager["accuracy"]
    points, lone, accuracy = [], [], {}
    for precision, repository in repositories:
        for classifier in options.classifiers:
            server = serve_repository(repository, options.results, classifier)
            try:
                system = f"triton-{classifier}-{precision}"
                lone.append(lone_requests(server, texts, system, options.lone_requests))
                accuracy[system] = served_accuracy(server, options.data, eager)
                points += sweep_triton(server, texts, options, system)
            finally:
                server.stop()
    if options.fastapi:
        points += sweep_fastapi(options.checkpoint, texts, options, max_length)
    results["points"] = points
    results["lone_requests"] = lone
    results["accuracy"] = accuracy
    results["summary"] = summarize(results)

    (options.results / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (options.results / "results.md").write_text(table + "\n")
    plot(results, options.results)
    plot_lone_request(results, options.results)
    print(table)
    return results


def _best(points: list[dict], system: str, batch_size: int = 1) -> dict | None:
    candidates = [p for p in points if p["system"] == system and p["batch_size"] == batch_size and not p["errors"]]
    return max(candidates, key=lambda p: p["texts_per_second"], default=None)


def _at(points: list[dict], system: str, concurrency: int, batch_size: int = 1) -> dict | None:
    return next(
        (
            p
            for p in points
            if p["system"] == system and p["concurrency"] == concurrency and p["batch_size"] == batch_size
        ),
        None,
    )


def summarize(results: dict) -> dict:
    """The ratios the issues set targets on, every one from this run's points.

    `served_fp32_*` and `served_int8_*` are the default classifier variant (DEFAULT_CLASSIFIER,
    what `make serve` runs); each variant also gets its own `<variant>_*` rows.
    """
    points = results["points"]
    pipeline_best = max(results["pipeline"], key=lambda r: r["texts_per_second"])
    ceiling = results["sorted_eager"]["texts_per_second"]
    summary = {
        "pipeline_best_texts_per_second": pipeline_best["texts_per_second"],
        "pipeline_best_batch_size": pipeline_best["batch_size"],
        "sorted_eager_texts_per_second": ceiling,
    }
    variants = sorted({p["system"].split("-")[1] for p in points if p["system"].startswith("triton-")})
    for variant in variants:
        for precision in ("fp32", "int8"):
            system = f"triton-{variant}-{precision}"
            best = _best(points, system)
            if not best:
                continue
            summary[f"{variant}_{precision}_best_texts_per_second"] = best["texts_per_second"]
            summary[f"{variant}_{precision}_best_concurrency"] = best["concurrency"]
            single = _at(points, system, 1)
            summary[f"{variant}_{precision}_p50_ms_c1_b1"] = single["p50_ms"] if single else None
            for clients in (16, 64):
                point = _at(points, system, clients)
                if point:
                    summary[f"{variant}_{precision}_requests_per_execution_c{clients}"] = point["avg_dynamic_batch"]
                    summary[f"{variant}_{precision}_padding_efficiency_c{clients}"] = point["padding_efficiency"]
    for reference in results.get("onnx_runtime", []):
        precision = reference["precision"]
        summary[f"onnx_runtime_{precision}_texts_per_second"] = reference["texts_per_second"]
        summary[f"onnx_runtime_{precision}_p50_ms_one_text"] = reference["p50_ms_one_text"]
        throughput = {v: summary.get(f"{v}_{precision}_best_texts_per_second") for v in variants}
        latency = {v: summary.get(f"{v}_{precision}_p50_ms_c1_b1") for v in variants}
        throughput = {v: x / reference["texts_per_second"] for v, x in throughput.items() if x}
        latency = {v: x / reference["p50_ms_one_text"] for v, x in latency.items() if x}
        for variant in throughput:
            summary[f"{variant}_{precision}_texts_per_second_vs_onnx_runtime"] = throughput[variant]
        for variant in latency:
            summary[f"{variant}_{precision}_p50_vs_onnx_runtime"] = latency[variant]
        if throughput:  # issue 15's targets: >= 1.0 and <= 1.25, for the best variant of each
            fastest = max(throughput, key=throughput.get)
            summary[f"best_served_{precision}_texts_per_second_vs_onnx_runtime"] = throughput[fastest]
            summary[f"best_served_{precision}_texts_per_second_variant"] = fastest
        if latency:
            quickest = min(latency, key=latency.get)
            summary[f"best_served_{precision}_p50_vs_onnx_runtime"] = latency[quickest]
            summary[f"best_served_{precision}_p50_variant"] = quickest
    for system, measured in results.get("accuracy", {}).items():
        variant = system.removeprefix("triton-").replace("-", "_")
        summary[f"{variant}_accuracy_loss_points"] = measured["accuracy_loss_points"]
        summary[f"{variant}_label_agreement_with_eager_fp32"] = measured["label_agreement_with_eager_fp32"]
    fp32, default = _best(points, f"triton-{DEFAULT_CLASSIFIER}-fp32"), f"triton-{DEFAULT_CLASSIFIER}-fp32"
    summary["served_default_classifier"] = DEFAULT_CLASSIFIER
    if fp32:
        summary["served_fp32_best_texts_per_second"] = fp32["texts_per_second"]
        summary["served_fp32_vs_pipeline"] = fp32["texts_per_second"] / pipeline_best["texts_per_second"]
        summary["served_fp32_vs_sorted_eager"] = fp32["texts_per_second"] / ceiling
        largest = max(p["batch_size"] for p in points if p["system"] == default)
        batched = _best(points, default, largest)
        if batched and largest > 1:
            summary[f"served_fp32_batch{largest}_vs_batch1"] = batched["texts_per_second"] / fp32["texts_per_second"]
        single = _at(points, default, 1)
        summary["served_fp32_p50_ms_c1_b1"] = single["p50_ms"] if single else None
    int8 = _best(points, f"triton-{DEFAULT_CLASSIFIER}-int8")
    if int8:
        summary["served_int8_best_texts_per_second"] = int8["texts_per_second"]
        summary["served_int8_vs_pipeline"] = int8["texts_per_second"] / pipeline_best["texts_per_second"]
    fastapi, served16 = _at(points, "fastapi+pipeline", 16), _at(points, default, 16)
    if fastapi and served16 and fastapi["texts_per_second"]:
        summary["served_fp32_vs_fastapi_c16"] = served16["texts_per_second"] / fastapi["texts_per_second"]
    return summary


def _fmt(value, spec: str = ".1f") -> str:
    return "" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    lines = [
        "| system | batch | concurrency | texts/s | requests/s | p50 ms | p95 ms | p99 ms | errors | "
        "avg dynamic batch | queue ms | padding efficiency | load generator CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["pipeline"]:
        lines.append(
            f"| HF pipeline (in-process) | {r['batch_size']} | - | {r['texts_per_second']:.1f} | | | | | 0 | "
            f"| | {r['padding_efficiency']:.2f} | |"
        )
    r = results["sorted_eager"]
    lines.append(
        f"| eager, length-sorted (in-process) | {r['batch_size']} | - | {r['texts_per_second']:.1f} | | | | | 0 "
        f"| | | {r['padding_efficiency']:.2f} | |"
    )
    for r in results.get("onnx_runtime", []):
        lines.append(
            f"| ONNX Runtime {r['precision']} (in-process, {r['threads']} threads) | {r['batch_size']} | - | "
            f"{r['texts_per_second']:.1f} | | {r['p50_ms_one_text']:.1f} (one text) | | | 0 | | | | |"
        )
    for p in results["points"]:
        lines.append(
            f"| {p['system']} | {p['batch_size']} | {p['concurrency']} | {p['texts_per_second']:.1f} | "
            f"{p['requests_per_second']:.1f} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} | {p['p99_ms']:.1f} | "
            f"{p['errors']} | {_fmt(p.get('avg_dynamic_batch'))} | {_fmt(p.get('queue_ms'), '.2f')} | "
            f"{_fmt(p.get('padding_efficiency'), '.2f')} | {p['loadgen_cpu_percent']:.0f} |"
        )
    lines += ["", lone_request_table(results), "", accuracy_table(results), ""]
    lines.append("| ratio | value |")
    lines.append("|---|---:|")
    for key, value in results["summary"].items():
        lines.append(f"| {key} | {value if isinstance(value, str) else _fmt(value, '.3g')} |")
    return "\n".join(lines)


def lone_request_steps(lone: dict, ensemble: str, order: list[str]) -> dict[str, float]:
    """Where the mean time of a lone request goes (ms): the client and gRPC, each step's queue
    and compute in the ensemble's `order`, and the ensemble's hand-overs between steps."""
    steps = lone["steps"]
    server = steps[ensemble]["total"]
    parts = {"client + gRPC": lone["mean_ms"] - server}
    for model in order:
        parts[f"{model} queue"] = steps[model]["queue"]
        parts[f"{model} compute"] = compute_ms(steps[model])
    parts["hand-overs"] = server - sum(steps[m]["queue"] + compute_ms(steps[m]) for m in order)
    return parts


def compute_ms(times: dict) -> float:
    return times["compute_input"] + times["compute_infer"]  # compute_output overlaps the next step


def accuracy_table(results: dict) -> str:
    measured = results.get("accuracy", {})
    if not measured:
        return ""
    lines = [
        f"| validation, {next(iter(measured.values()))['texts']} texts | accuracy | points below eager fp32 "
        "| labels = eager fp32 |",
        "|---|---:|---:|---:|",
        f"| eager fp32 (in-process) | {results['eager_fp32_accuracy']:.2%} | 0 | 100% |",
    ]
    for system, r in measured.items():
        lines.append(
            f"| {system} | {r['accuracy']:.2%} | {r['accuracy_loss_points']:.2f} | {r['label_agreement_with_eager_fp32']:.2%} |"
        )
    return "\n".join(lines)


def lone_request_table(results: dict) -> str:
    """One client, one text per request: each step's mean time from Triton's per-model statistics."""
    rows = [
        (r["system"], r["p50_ms"], lone_request_steps(r, results["ensemble"], results["ensemble_steps"]))
        for r in results["lone_requests"]
    ]
    if not rows:
        return ""
    columns = list(dict.fromkeys(c for _, _, parts in rows for c in parts))
    lines = [
        "| one client, one text | client p50 ms | client mean ms | " + " | ".join(columns) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for system, p50, parts in rows:
        mean = sum(parts.values())
        cells = " | ".join(_fmt(parts.get(c), ".2f") for c in columns)
        lines.append(f"| {system} | {p50:.2f} | {mean:.2f} | {cells} |")
    return "\n".join(lines)


def plot_lone_request(results: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (r["system"], lone_request_steps(r, results["ensemble"], results["ensemble_steps"]))
        for r in results["lone_requests"]
    ]
    if not rows:
        return
    columns = list(dict.fromkeys(c for _, parts in rows for c in parts))
    fig, axis = plt.subplots(figsize=(11, 0.5 * len(rows) + 2))
    for index, column in enumerate(columns):
        widths = [max(parts.get(column, 0.0), 0.0) for _, parts in rows]
        lefts = [sum(max(v, 0.0) for c, v in parts.items() if columns.index(c) < index) for _, parts in rows]
        axis.barh([s for s, _ in rows], widths, left=lefts, label=column, color=plt.cm.tab10(index % 10))
    for reference in results.get("onnx_runtime", []):
        axis.axvline(
            reference["p50_ms_one_text"],
            color="black",
            linestyle=":" if reference["precision"] == "int8" else "--",
            label=f"ONNX Runtime {reference['precision']} in-process, p50 of one text",
        )
    axis.set_xlabel("mean ms per request (one client, one text)")
    axis.legend(fontsize=7, loc="lower right")
    axis.invert_yaxis()
    fig.suptitle("Where a lone request's time goes (Triton per-model statistics)")
    fig.tight_layout()
    fig.savefig(folder / "lone_request_steps.png", dpi=110)
    plt.close(fig)


def plot(results: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (throughput, latency) = plt.subplots(1, 2, figsize=(13, 5))
    # One colour per system, one line style per request size: 13+ series stay readable.
    series: dict[tuple[str, int], list[dict]] = {}
    for p in results["points"]:
        series.setdefault((p["system"], p["batch_size"]), []).append(p)
    systems = list(dict.fromkeys(system for system, _ in series))
    sizes = sorted({size for _, size in series})
    styles = ["-", "--", ":", "-."]
    for (system, size), rows in series.items():
        rows.sort(key=lambda p: p["concurrency"])
        xs = [p["concurrency"] for p in rows]
        look = {
            "color": plt.cm.tab10(systems.index(system) % 10),
            "linestyle": styles[sizes.index(size) % len(styles)],
            "marker": "o",
            "markersize": 4,
        }
        label = f"{system}, {size} text(s)/request"
        throughput.plot(xs, [p["texts_per_second"] for p in rows], label=label, **look)
        latency.plot(xs, [p["p95_ms"] for p in rows], label=label, **look)
    best_pipeline = max(r["texts_per_second"] for r in results["pipeline"])
    throughput.axhline(best_pipeline, color="grey", linestyle="--", label="HF pipeline, in-process best")
    throughput.axhline(
        results["sorted_eager"]["texts_per_second"],
        color="black",
        linestyle=":",
        label="eager length-sorted, in-process",
    )
    for reference in results.get("onnx_runtime", []):
        throughput.axhline(
            reference["texts_per_second"],
            color="darkred",
            linestyle=":" if reference["precision"] == "int8" else "--",
            label=f"ONNX Runtime {reference['precision']}, in-process",
        )
    for axis, label in ((throughput, "texts/s"), (latency, "p95 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    latency.set_yscale("log")
    throughput.legend(fontsize=6, ncol=2)
    fig.suptitle(f"emotion classifier on {results['machine']['cpus']} CPU cores")
    fig.tight_layout()
    fig.savefig(folder / "throughput_latency.png", dpi=110)
    plt.close(fig)


def model_table(checkpoints: list[Path], options: BenchOptions) -> list[dict]:
    """The model card's comparison table, every number measured through the served ensemble."""
    texts = data_module.load(options.data).splits["validation"].texts
    rows = []
    for index, checkpoint in enumerate(checkpoints, 1):
        # Numbered: checkpoints are often folders of the same name ("checkpoint") in different runs.
        repository = export_repository(checkpoint, options.data, options.results / f"repo-model{index}", "none")
        server = serve_repository(repository, options.results)
        try:
            report = evaluate_served(EvaluationOptions(source=options.data, url=server.grpc_url, concurrency=4))
            runs = [asyncio.run(_measure(ensemble_sender(server), texts, c, 1, options.seconds)) for c in (8, 16)]
            best = max(runs, key=lambda r: r.texts_per_second)
        finally:
            server.stop()
        rows.append(
            {
                "model": str(checkpoint),
                "accuracy": report["metrics"]["accuracy"],
                "f1_weighted": report["metrics"]["f1_weighted"],
                "served_texts_per_second": best.texts_per_second,
                "concurrency": best.concurrency,
            }
        )
    lines = ["| model | accuracy | weighted F1 | served texts/s (1 text/request) |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r['model']} | {r['accuracy']:.2%} | {r['f1_weighted']:.2%} | {r['served_texts_per_second']:.1f} |"
        for r in rows
    ]
    (options.results / "models.md").write_text("\n".join(lines) + "\n")
    (options.results / "models.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))
    return rows


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    defaults = BenchOptions(checkpoint=Path())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="fine-tuned checkpoint directory (the full benchmark)")
    parser.add_argument(
        "--models",
        type=Path,
        nargs="+",
        help="fine-tuned checkpoints: print the model card's table (accuracy, weighted F1, texts/s)",
    )
    parser.add_argument("--data", default=defaults.data, help="labelled texts (default: emotion validation)")
    parser.add_argument("--results", type=Path, default=defaults.results)
    parser.add_argument("--concurrency", type=int, nargs="+", default=defaults.concurrency)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=defaults.batch_sizes)
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="measured seconds per point")
    parser.add_argument(
        "--lone-requests", type=int, default=defaults.lone_requests, help="one-text requests timed step by step"
    )
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument(
        "--classifiers",
        nargs="+",
        choices=sorted(CLASSIFIER_CONFIGS),
        default=defaults.classifiers,
        help="classifier variants to serve (default: all)",
    )
    parser.add_argument("--no-fastapi", action="store_true")
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.models:
        parser.error("give --checkpoint (the full benchmark) or --models (the model table)")
    options = BenchOptions(
        checkpoint=args.checkpoint,
        data=args.data,
        results=args.results,
        concurrency=args.concurrency,
        batch_sizes=args.batch_sizes,
        seconds=args.seconds,
        lone_requests=args.lone_requests,
        int8=not args.no_int8,
        fastapi=not args.no_fastapi,
        classifiers=args.classifiers,
    )
    options.results.mkdir(parents=True, exist_ok=True)
    try:
        if args.checkpoint:
            run(options)
        if args.models:
            model_table(args.models, options)
    except ModelSourceError as error:
        print(f"error: {error}; the offline fine-tune: python build/build.py --preset minilm-offline", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
