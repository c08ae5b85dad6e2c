"""The benchmark's phases (emotion_lab.perf.benchmark runs them): a served repository per variant,
sweeps of the served ensemble and of the FastAPI baseline under the closed-loop load generator, lone
requests with Triton's per-step times, and accuracy through the server against the eager model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated

from tqdm.auto import tqdm
from tyro.conf import arg

from emotion_triton import data as data_module
from emotion_triton.build.modeling import checkpoint_labels, predict_logits
from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.build.training import training_arguments
from emotion_triton.client.load import Load, drive, latency_ms
from emotion_triton.evaluation.labelled_data import read_labelled
from emotion_triton.evaluation.server_accuracy import EvaluationOptions, evaluate_served
from emotion_triton.repository import (
    CLASSIFIER_CONFIGS,
    DEFAULT_CHECKPOINT,
    OFFLINE_BUILD_COMMAND,
    PROJECT_ROOT,
    Ensemble,
    copy_sources,
)
from emotion_triton.serving.local_server import DEFAULT_CLASSIFIER, ClassifierName, LocalServer, ServerOptions
from emotion_triton.serving.preflight import free_port
from emotion_triton.serving.prometheus import COMPUTED_TOKENS, REAL_TOKENS, metric_total, triton_metrics

from .loadgen import closed_loop, json_http_sender, triton_grpc_sender

DEFAULT_DATA = str(data_module.EMOTION_VALIDATION_FILE)


@dataclass
class BenchOptions:
    """The benchmark's systems, texts and load."""

    checkpoint: Annotated[
        Path | None,
        arg(
            help_behavior_hint=f"(default without --models: {DEFAULT_CHECKPOINT.relative_to(PROJECT_ROOT)}, "
            f"where `{OFFLINE_BUILD_COMMAND}` puts it)"
        ),
    ] = None
    """fine-tuned checkpoint directory: the full benchmark (None: only the model table of --models)"""
    data: str = DEFAULT_DATA
    """labelled texts"""
    results: Path = PROJECT_ROOT / "results" / "bench"
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    """requests in flight of the served sweep"""
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    """texts per request of the served sweep"""
    fastapi_concurrency: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    seconds: float = 5.0
    """measured seconds per point"""
    in_process_texts: int = 1000
    lone_requests: int = 300
    """one-text requests timed step by step"""
    # The flags are --no-int8 and --no-fastapi: their help says what they do.
    int8: Annotated[bool, arg(help="leave out the int8 repository: fp32 only", help_behavior_hint="")] = True
    fastapi: Annotated[bool, arg(help="leave out the FastAPI + pipeline baseline", help_behavior_hint="")] = True
    container: Annotated[
        bool, arg(help="leave out the CPU-host containers against the local server", help_behavior_hint="")
    ] = True
    classifiers: list[ClassifierName] = field(default_factory=lambda: list(CLASSIFIER_CONFIGS))
    """classifier variants to serve"""
    response_cache_mb: int = 16
    """MiB of Triton's response cache in the cache benchmark (the default variant, cache off vs on); 0: no cache benchmark"""


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


def statistics_counting(server: LocalServer, successes: int, wait: float = 5.0) -> dict[str, dict]:
    """model_statistics once the ensemble has counted `successes` requests: Triton counts a success
    just after it has sent the answer, so a snapshot taken on the answer may miss the last one."""
    deadline = time.monotonic() + wait
    while True:
        statistics = model_statistics(server)
        if statistics[server.ensemble.name]["success"]["count"] >= successes or time.monotonic() > deadline:
            return statistics
        time.sleep(0.05)


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


def ensemble_sender(server: LocalServer, grpc_url: str | None = None):
    """A factory of gRPC senders for the served ensemble, its tensor names read from its config; at
    `grpc_url` when another server (a container) serves the same repository."""
    ensemble = server.ensemble
    url = grpc_url or server.grpc_url
    return partial(triton_grpc_sender, url, ensemble.name, ensemble.text_input, list(ensemble.outputs))


def sweep_triton(server: LocalServer, texts: list[str], options: BenchOptions, system: str) -> list[dict]:
    sender = ensemble_sender(server)
    points = []
    grid = [(b, c) for b in options.batch_sizes for c in options.concurrency]
    for batch_size, concurrency in tqdm(grid, desc=system, unit="point", dynamic_ncols=True):
        before = triton_metrics(server.metrics_url)
        result = asyncio.run(measure(sender, texts, concurrency, batch_size, options.seconds))
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

    async def send_all() -> tuple[dict, dict, Load]:
        send, close = ensemble_sender(server)()
        try:
            one_at_a_time, name = [send], server.ensemble.name
            counted = model_statistics(server)[name]["success"]["count"]
            warmed = await drive(one_at_a_time, [[text] for text in texts[:warmup]])
            before = statistics_counting(server, counted + len(warmed.records))
            with tqdm(total=count, desc=f"{system} lone requests", unit="request", leave=False) as bar:
                load = await drive(one_at_a_time, [[text] for text in texts[:count]], on_sent=lambda _: bar.update())
            after = statistics_counting(server, counted + len(warmed.records) + len(load.records))
            failed = next((r.error for r in warmed.records + load.records if r.error is not None), None)
            if failed is not None:  # a lone request has nothing to compete with: its failure is the server's
                raise failed
            return before, after, load
        finally:
            await close()

    before, after, load = asyncio.run(send_all())
    latency = latency_ms([r.seconds for r in load.records])
    return {
        "system": system,
        "requests": len(load.records),
        "p50_ms": latency["p50"],
        "mean_ms": latency["mean"],
        "steps": step_times(before, after),
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


async def measure(make_sender, texts, concurrency, batch_size, seconds):
    send, close = make_sender()  # clients bind to the running event loop: create them inside it
    try:
        return await closed_loop(send, texts, concurrency, batch_size, seconds)
    finally:
        await close()


def serve_repository(
    repository: Path, workdir: Path, classifier: str = DEFAULT_CLASSIFIER, response_cache_mb: int = 0
) -> LocalServer:
    options = ServerOptions.on_free_ports(
        repository=repository,
        classifier=classifier,
        response_cache_mb=response_cache_mb,
        log_file=workdir
        / f"tritonserver-{repository.name}-{classifier}{f'-cache{response_cache_mb}' if response_cache_mb else ''}.log",
    )
    server = LocalServer(options)
    server.start()
    return server


def installed_precision(ensemble: Ensemble, classifier: str) -> str:
    """ "int8" or "fp32": the precision of the file a classifier variant serves, as its build report says."""
    report = json.loads(ensemble.report_file.read_text())
    gate = report.get("onnx", {}) if ensemble.served_file(classifier) == ensemble.onnx_file else report
    return gate.get("quantization", {}).get("installed", "fp32")


def export_repository(checkpoint: Path, data: str, target: Path, quantize: str) -> Path:
    import shutil

    if target.exists():
        shutil.rmtree(target)
    copy_sources(target)
    build(
        BuildOptions(finetuned=str(checkpoint), data=data, repository=target, quantize=quantize),
        training_arguments(target.parent / f"run-{target.name}"),
    )
    return target


def sweep_fastapi(checkpoint: Path, texts: list[str], options: BenchOptions, max_length: int) -> list[dict]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emotion_lab.perf.baselines",
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
            result = asyncio.run(measure(sender, texts, concurrency, 1, options.seconds))
            points.append({"system": "fastapi+pipeline", **result.as_dict()})
        return points
    finally:
        process.terminate()
        process.wait(30)
