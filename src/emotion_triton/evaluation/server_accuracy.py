"""Evaluate the served ensemble on labelled data: quality, throughput, latency, and parity with the eager model.

    emotion-evaluate ../shared/data/emotion                        # its validation split
    emotion-evaluate test.txt --protocol http --url 127.0.0.1:8000 --json
    emotion-evaluate dair-ai/emotion:test --compare-with runs/x/checkpoint --report-dir results/

The texts go through the served ensemble in batched requests, `concurrency` at a
time (EmotionClient in threads); every request is timed as it is sent. Label
names of the data are matched to the labels the SERVER reports. Rows that cannot
be used (empty, malformed, a label the server does not know) and texts the server
does not answer (refused, timed out, unreachable) are counted with their reasons;
metrics cover the answered texts.

Exit codes: 0 all texts answered (and parity held, when asked); 1 some texts failed,
or the server cannot be used; 2 bad options or input (no file, no usable rows, Hub
data set unavailable); 3 the served model disagrees with the eager checkpoint.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from tyro.conf import Positional, Suppress, arg

from ..client import ClientError, EmotionClient
from ..client.classify import ServerUrl
from ..command_line import value_or
from ..errors import EmotionTritonError
from ..repository import DEFAULT_CHECKPOINT, OFFLINE_BUILD_COMMAND, PROJECT_ROOT
from .classification_metrics import classification_metrics
from .labelled_data import EvaluationError, match_labels, read_labelled
from .parity import EagerReference, compare_with_eager
from .report import EXIT_FAILED, EXIT_PARITY, EXIT_USAGE, exit_code, format_report, shorten, write_report_dir
from .sending import latency_summary, send_texts, served_max_length


@dataclass
class EvaluationOptions:
    """An evaluation of the served ensemble (its fields are emotion-evaluate's options)."""

    source: Positional[Annotated[str, arg(metavar="SOURCE")]]
    """labelled data: a file (text;label, CSV, JSON Lines), a directory of splits, or a Hub data set[:split]"""
    split: str = "validation"
    """split of a directory or a Hub data set without `:split`"""
    url: ServerUrl = None
    """server address"""
    protocol: Literal["grpc", "http"] = "grpc"
    model: str = "emotion"
    batch_size: Annotated[int | None, arg(help_behavior_hint="(default: the server's max_batch_size)")] = None
    """texts per request"""
    concurrency: int = 4
    """requests in flight"""
    timeout: float = 30.0
    """seconds per request"""
    compare_with: Annotated[
        Annotated[str, value_or(str(DEFAULT_CHECKPOINT), "CHECKPOINT")] | None,
        arg(
            help_behavior_hint=f"(without a value: {DEFAULT_CHECKPOINT.relative_to(PROJECT_ROOT)}, "
            f"where `{OFFLINE_BUILD_COMMAND}` puts it)"
        ),
    ] = None
    """a fine-tuned checkpoint directory: also run it eagerly on the same texts and check parity"""
    as_json: Annotated[bool, arg(name="json")] = False
    """print one JSON document instead of the text report"""
    report_dir: Path | None = None
    """write evaluation.json and confusion_matrix.png here"""
    progress: Suppress[bool | None] = None  # None: a progress bar when standard error is a terminal


# -- the whole evaluation ----------------------------------------------------------------------


def evaluate_served(options: EvaluationOptions, load_reference: Callable[[str], EagerReference] | None = None) -> dict:
    """Runs the evaluation and returns its report; raises EvaluationError, ModelSourceError or ClientError.

    `load_reference` loads the eager checkpoint of `options.compare_with` (the build layer's
    CheckpointReference); it is called once the data are read, before any request is sent.
    """
    if options.concurrency < 1:
        raise EvaluationError("--concurrency must be at least 1")
    if options.compare_with and load_reference is None:
        raise EvaluationError("--compare-with needs the eager model's loader: run it with the emotion-evaluate command")
    data = read_labelled(options.source, options.split)
    eager = load_reference(options.compare_with) if options.compare_with else None
    with EmotionClient(options.url, options.protocol, options.model, options.timeout) as client:
        server_labels = client.labels
        max_batch = client.max_batch_size
        batch_size = max_batch if options.batch_size is None else options.batch_size
        if not 1 <= batch_size <= max_batch:
            raise EvaluationError(f"--batch-size must be between 1 and the server's max_batch_size {max_batch}")
        max_length = served_max_length(client) if eager else None
        y_true = match_labels(data, server_labels)
        sent = send_texts(client, data.texts, batch_size, options.concurrency, options.progress)

    answered = [i for i, outcome in enumerate(sent.outcomes) if outcome.error is None]
    index = {name: i for i, name in enumerate(server_labels)}
    metrics = (
        classification_metrics(
            [y_true[i] for i in answered], [index[sent.outcomes[i].label] for i in answered], server_labels
        )
        if answered
        else None
    )
    failures = [
        {"index": i, "text": shorten(text, 200), "label": label, "kind": outcome.kind, "error": outcome.error}
        for i, (text, label, outcome) in enumerate(zip(data.texts, data.labels, sent.outcomes, strict=True))
        if outcome.error is not None
    ]
    by_kind: dict[str, int] = {}
    for failure in failures:
        by_kind[failure["kind"]] = by_kind.get(failure["kind"], 0) + 1

    parity = None
    if eager:
        served = np.array([sent.outcomes[i].scores for i in answered], dtype=np.float32).reshape(-1, len(server_labels))
        parity = compare_with_eager(eager, [data.texts[i] for i in answered], served, server_labels, max_length)
        parity["checkpoint"] = str(options.compare_with)

    problems = data.problems
    report = {
        "source": data.source,
        "split": data.split,
        "server": {
            "url": client.url,
            "protocol": options.protocol,
            "model": options.model,
            "labels": server_labels,
            "max_batch_size": max_batch,
        },
        "settings": {"batch_size": batch_size, "concurrency": options.concurrency, "timeout": options.timeout},
        "skipped_rows": {
            "empty": problems.empty,
            "malformed": problems.malformed,
            "unknown_label": problems.unknown_label,
            "total": problems.total,
            "unknown_labels": data.unknown_labels,
            "examples": list(problems.examples),
        },
        "texts": len(data.texts),
        "answered": len(answered),
        "failed": len(failures),
        "failed_by_kind": by_kind,
        "failures": failures,
        "metrics": metrics,
        "throughput": latency_summary(sent),
        "parity": parity,
        "predictions": [
            {"text": text, "label": label, "predicted": outcome.label, "scores": outcome.scores}
            for text, label, outcome in zip(data.texts, data.labels, sent.outcomes, strict=True)
        ],
    }
    report["exit_code"] = exit_code(report)
    return report


def run(options: EvaluationOptions, load_reference: Callable[[str], EagerReference] | None = None) -> int:
    """The command line's work: evaluate, print (text or --json), write --report-dir; returns the exit code."""
    try:
        report = evaluate_served(options, load_reference)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except EmotionTritonError as error:  # the others: options or input (EvaluationError, ModelSourceError)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if options.report_dir:
        written = write_report_dir(report, options.report_dir)
    print(json.dumps(report, ensure_ascii=False) if options.as_json else format_report(report))
    if options.report_dir and not options.as_json:
        print(f"report written to {', '.join(map(str, written))}")
    code = report["exit_code"]
    if code == EXIT_PARITY:
        print(f"error: parity FAILED: {report['parity']['reason']}", file=sys.stderr)
    elif code == EXIT_FAILED:
        print(f"error: {report['failed']} of {report['texts']} texts were not classified", file=sys.stderr)
    return code
