"""The benchmark: our served ensemble against what users would run instead, in ONE run.

    python -m emotion_lab.perf.benchmark        (make bench: the offline build's runs/minilm-offline/checkpoint)

Same machine, same fine-tuned weights, same texts for every system:
- in-process: the HF `pipeline` at each batch size, the eager model with length-sorted
  batches, and ONNX Runtime (fp32 and int8, the repository's own model.onnx, as many threads as
  cores): the fastest CPU runtime, the reference the served variants are held to;
- served: our ensemble with each classifier variant (libtorch: the production config on
  Triton's PyTorch backend, CPU instances; onnx: model.onnx on ONNX Runtime in a Python-backend
  model, `make serve`'s default),
  fp32 and int8 unless --no-int8, over gRPC under a closed-loop asyncio load generator, a sweep
  over concurrency and request batch size, with the time of each ensemble step from Triton's
  per-model statistics;
- a plain FastAPI + `pipeline` server, one text per call, under the same load generator;
- Triton's response cache, off and on, on streams where 0%, 30% and 90% of the texts repeat;
- the CPU-host containers (docker-compose.cpu.yml on the stand-in images) against the local
  server, at 1 and 16 clients (skipped with the reason where no container engine runs).

Writes results.json, results.md and PNG plots into --results, and prints the table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from tqdm.auto import tqdm
from tyro.conf import arg

from emotion_triton import data as data_module
from emotion_triton.build.modeling import load_classifier, load_tokenizer
from emotion_triton.build.pipeline import QuantizationRefused
from emotion_triton.command_line import parse
from emotion_triton.evaluation.server_accuracy import EvaluationOptions, evaluate_served
from emotion_triton.hub import ModelSourceError
from emotion_triton.repository import DEFAULT_CHECKPOINT, OFFLINE_BUILD_COMMAND, Ensemble

from .baselines import load_pipeline, measure_onnx_runtime, measure_pipeline, measure_sorted_eager
from .bench_phases import (
    BenchOptions,
    eager_reference,
    ensemble_sender,
    export_repository,
    installed_precision,
    lone_requests,
    measure,
    serve_repository,
    served_accuracy,
    sweep_fastapi,
    sweep_triton,
)
from .bench_report import markdown, plot, plot_lone_request, summarize
from .container_bench import compare_container, container_summary, container_table
from .response_cache_bench import cache_summary, cache_table, plot_response_cache, sweep_response_cache

logger = logging.getLogger(__name__)


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
        try:
            int8_repository = export_repository(options.checkpoint, options.data, options.results / "repo-int8", "int8")
            repositories.append(("int8", int8_repository))
        except QuantizationRefused as refused:  # the build's gate: neither int8 file keeps the accuracy as served
            logger.warning("no int8 repository: %s", refused)
            results["int8_refused"] = str(refused)
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
            installed = installed_precision(Ensemble.read(repository), classifier)
            if installed != precision:  # the int8 gate installed this variant's file in fp32
                logger.info("%s serves %s in the %s repository: not measured again", classifier, installed, precision)
                results.setdefault("not_installed", []).append(f"triton-{classifier}-{precision}")
                continue
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
    if options.response_cache_mb:
        results["response_cache"] = sweep_response_cache(fp32_repository, texts, options)
    if options.container:
        results["container"] = compare_container(options.checkpoint, fp32_repository, texts, options)
    results["points"] = points
    results["lone_requests"] = lone
    results["accuracy"] = accuracy
    results["summary"] = (
        summarize(results)
        | cache_summary(results.get("response_cache", []))
        | container_summary(results.get("container", {}))
    )

    (options.results / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = "\n\n".join(
        [
            markdown(results),
            cache_table(results.get("response_cache", [])),
            container_table(results.get("container", {})),
        ]
    )
    (options.results / "results.md").write_text(table + "\n")
    plot(results, options.results)
    plot_lone_request(results, options.results)
    plot_response_cache(results.get("response_cache", []), options.results)
    print(table)
    return results


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
            runs = [asyncio.run(measure(ensemble_sender(server), texts, c, 1, options.seconds)) for c in (8, 16)]
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


@dataclass
class BenchCommand:
    """emotion-bench's command line: the benchmark's options, and the checkpoints of the model table."""

    benchmark: BenchOptions = field(default_factory=BenchOptions)
    models: Annotated[list[Path] | None, arg(metavar="CHECKPOINT [CHECKPOINT ...]", help_behavior_hint="")] = None
    """fine-tuned checkpoints: print the model card's table (accuracy, weighted F1, texts/s)"""


def parse_arguments(argv: list[str] | None = None) -> tuple[BenchOptions, list[Path] | None]:
    """(options of the full benchmark, or None with --models; the checkpoints of --models)."""
    command = parse(BenchCommand, argv, __doc__)
    options = command.benchmark
    if options.checkpoint is None and not command.models:
        options.checkpoint = DEFAULT_CHECKPOINT
    return options, command.models


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options, models = parse_arguments(argv)
    options.results.mkdir(parents=True, exist_ok=True)
    try:
        if options.checkpoint:
            run(options)
        if models:
            model_table(models, options)
    except ModelSourceError as error:
        print(f"error: {error}; the offline fine-tune: {OFFLINE_BUILD_COMMAND}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
