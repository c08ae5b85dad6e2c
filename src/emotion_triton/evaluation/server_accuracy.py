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
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import data as data_module
from ..client import ClientError, EmotionClient, ModelNotServedError, RequestRecord
from ..data import SUFFIXES, Problems
from ..hub import ModelSourceError
from .classification_metrics import classification_metrics, format_metrics, plot_confusion_matrix

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3
PARITY_TOLERANCE = 1e-4  # largest allowed |served - eager| of any class probability (fp32)
SHOWN_EXAMPLES = 5  # failures and disagreements listed on the terminal (the JSON has them all)


class EvaluationError(RuntimeError):
    """A one-line reason the evaluation cannot start (bad options or input)."""


@dataclass
class EvaluationOptions:
    source: str  # a labelled file, a directory of splits, or a Hub data set id (`name[:split]`)
    split: str = "validation"  # of a directory or a Hub data set without `:split`
    url: str | None = None
    protocol: str = "grpc"
    model: str = "emotion"
    batch_size: int | None = None  # default: the server's max_batch_size
    concurrency: int = 4
    timeout: float = 30.0
    compare_with: str | None = None  # a fine-tuned checkpoint directory
    as_json: bool = False
    report_dir: Path | None = None
    progress: bool | None = None  # None: a progress bar when standard error is a terminal


@dataclass
class LabelledTexts:
    source: str
    split: str | None  # None: a single file, all its rows
    texts: list[str]
    labels: list[str]
    problems: Problems = field(default_factory=Problems)
    unknown_labels: dict[str, int] = field(default_factory=dict)  # label -> rows, of labels the server lacks


@dataclass
class Outcome:
    """The served answer for one text, or why there is none."""

    label: str | None = None
    scores: list[float] | None = None  # in the server's label order
    error: str | None = None
    kind: str | None = None  # refused, timeout, unavailable, overloaded, not_found, error


@dataclass
class SendResult:
    outcomes: list[Outcome]
    seconds: float  # wall time of the whole sending phase
    requests: list[RequestRecord]


# -- input -------------------------------------------------------------------------------------


def read_labelled(source: str, split: str = "validation") -> LabelledTexts:
    """One split of a labelled file, directory or Hub data set; bad rows are counted, never raised."""
    path = Path(source)
    if path.is_dir():
        found = data_module.find_split_file(path, split)
        if found is None:
            raise EvaluationError(f"{source} has no {split} file ({', '.join(f'{split}{s}' for s in SUFFIXES)})")
        path = found
    if path.is_file():
        try:
            rows = data_module.read_file(path)
        except ValueError as error:
            raise EvaluationError(str(error)) from error
        used_split = split if Path(source).is_dir() else None
        return LabelledTexts(str(path), used_split, rows.texts, rows.labels, rows.problems)
    if path.suffix.lower() in SUFFIXES or source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise EvaluationError(f"no such file or directory: {source}")
    name, _, only = source.partition(":")
    loaded = data_module.load(source)  # raises HubUnavailableError offline
    key = "validation" if only else split
    if key not in loaded.splits:
        raise EvaluationError(f"data set '{name}' has no split '{split}' (it has {', '.join(loaded.splits)})")
    rows = loaded.splits[key]
    return LabelledTexts(source, only or split, rows.texts, rows.labels, rows.problems)


def match_labels(data: LabelledTexts, server_labels: list[str]) -> list[int]:
    """Keeps the rows whose label the server knows and returns their class ids; counts the others."""
    index = {name: i for i, name in enumerate(server_labels)}
    keep = [i for i, label in enumerate(data.labels) if label in index]
    for i in sorted(set(range(len(data.labels))) - set(keep)):
        data.problems.add("unknown_label", f"label {data.labels[i]!r}")
        data.unknown_labels[data.labels[i]] = data.unknown_labels.get(data.labels[i], 0) + 1
    unknown = sorted(data.unknown_labels)
    data.texts = [data.texts[i] for i in keep]
    data.labels = [data.labels[i] for i in keep]
    if not data.texts:
        if unknown:
            raise EvaluationError(
                f"none of the labels of {data.source} ({', '.join(unknown[:10])}) is one the server knows "
                f"({', '.join(server_labels)})"
            )
        raise EvaluationError(f"{data.source} holds no usable labelled rows ({data.problems.total} skipped)")
    return [index[label] for label in data.labels]


# -- sending -----------------------------------------------------------------------------------


def send_texts(
    client: EmotionClient, texts: list[str], batch_size: int, concurrency: int, progress: bool | None = False
) -> SendResult:
    """Classifies `texts` in requests of `batch_size`, `concurrency` in flight; no error stops the run.

    A text the server refuses fails alone (EmotionClient retries its neighbours without it); a
    request that fails otherwise (timeout, connection, overload after retries) fails its texts.
    Every request sent is recorded with its own latency.
    """
    from tqdm.auto import tqdm

    labels = client.labels  # read once, before the threads start
    records: list[RequestRecord] = []
    previous = client.on_request

    def record(request: RequestRecord) -> None:
        records.append(request)  # list.append is atomic: safe from the worker threads
        if previous is not None:
            previous(request)

    def one_batch(batch: list[str]) -> list[Outcome]:
        try:
            predictions = client.classify_batch(batch)
        except ClientError as error:
            return [Outcome(error=str(error), kind=error.kind) for _ in batch]
        except Exception as error:  # an unexpected client failure is counted for its texts, never ends the run
            return [Outcome(error=f"{type(error).__name__}: {error}", kind="error") for _ in batch]
        return [
            Outcome(p.label, [p.scores[name] for name in labels])
            if p.error is None
            else Outcome(error=p.error, kind="refused")
            for p in predictions
        ]

    starts = range(0, len(texts), batch_size)
    outcomes: list[Outcome] = [Outcome()] * len(texts)
    client.on_request = record
    bar = tqdm(total=len(texts), unit="text", desc="evaluating", disable=None if progress is None else not progress)
    pool = ThreadPoolExecutor(max(1, concurrency))
    try:
        began = time.perf_counter()
        futures = {pool.submit(one_batch, texts[start : start + batch_size]): start for start in starts}
        for future in as_completed(futures):
            answers = future.result()
            start = futures[future]
            outcomes[start : start + len(answers)] = answers
            bar.update(len(answers))
        seconds = time.perf_counter() - began
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C only the requests in flight finish
        bar.close()
        client.on_request = previous
    return SendResult(outcomes, seconds, records)


def latency_summary(result: SendResult) -> dict:
    """Throughput of the answered texts and the latency of every request that was answered."""
    answered = sum(outcome.error is None for outcome in result.outcomes)
    ok = np.array([r.seconds for r in result.requests if r.error is None]) * 1000
    return {
        "seconds": result.seconds,
        "samples_per_second": answered / result.seconds if result.seconds > 0 else None,
        "requests": len(result.requests),
        "failed_requests": sum(r.error is not None for r in result.requests),
        "retries": sum(r.attempts - 1 for r in result.requests),
        "latency_ms": {
            "p50": float(np.percentile(ok, 50)),
            "p95": float(np.percentile(ok, 95)),
            "p99": float(np.percentile(ok, 99)),
            "mean": float(ok.mean()),
            "max": float(ok.max()),
        }
        if ok.size
        else None,
    }


def served_max_length(client: EmotionClient) -> int:
    max_length = client.max_length
    if max_length is None:
        raise ModelNotServedError(f"model '{client.model}' has no tokenizer step with a max_length parameter")
    return max_length


# -- parity with the eager model ---------------------------------------------------------------


class EagerReference(Protocol):
    """The fine-tuned checkpoint run eagerly, loaded before any request is sent (--compare-with).

    The build layer implements it (emotion_triton.build.eager_reference, torch and transformers); the
    emotion-evaluate command passes its loader in, so this layer never imports either.
    """

    labels: list[str]  # the checkpoint's class names, in its own order

    def probabilities(self, texts: list[str], max_length: int) -> np.ndarray: ...


def compare_with_eager(
    reference: EagerReference, texts: list[str], served_scores: np.ndarray, server_labels: list[str], max_length: int
) -> dict:
    """Runs the eager model on the texts the server answered and compares labels and probabilities."""
    names = reference.labels
    report = {"compared": len(texts), "max_length": max_length, "tolerance": PARITY_TOLERANCE}
    if sorted(names) != sorted(server_labels):
        return {**report, "passed": False, "reason": f"the checkpoint's labels {names} are not the server's"}
    if not texts:
        return {**report, "passed": False, "reason": "the server answered no text to compare"}
    eager = reference.probabilities(texts, max_length)[:, [names.index(n) for n in server_labels]]
    eager_ids, served_ids = eager.argmax(axis=1), served_scores.argmax(axis=1)
    agreement = float((eager_ids == served_ids).mean())
    max_diff = float(np.abs(eager - served_scores).max())
    disagreements = [
        {
            "index": int(i),
            "text": texts[i],
            "served": server_labels[served_ids[i]],
            "eager": server_labels[eager_ids[i]],
        }
        for i in np.flatnonzero(eager_ids != served_ids)
    ]
    passed = agreement == 1.0 and max_diff < PARITY_TOLERANCE
    reason = None
    if not passed:
        reason = (
            f"labels agree on {agreement:.2%} of the texts (must be 100%), "
            f"largest probability difference {max_diff:.2e} (must be < {PARITY_TOLERANCE:g})"
        )
    return {
        **report,
        "agreement": agreement,
        "max_abs_diff": max_diff,
        "passed": passed,
        "reason": reason,
        "disagreements": disagreements,
    }


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
        {"index": i, "text": _short(text, 200), "label": label, "kind": outcome.kind, "error": outcome.error}
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


def exit_code(report: dict) -> int:
    if report["parity"] is not None and not report["parity"]["passed"]:
        return EXIT_PARITY
    return EXIT_FAILED if report["failed"] else EXIT_OK


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_report(report: dict) -> str:
    server, settings, throughput = report["server"], report["settings"], report["throughput"]
    skipped = report["skipped_rows"]
    split = f" ({report['split']} split)" if report["split"] else ""
    lines = [
        f"{report['source']}{split}: {report['texts']} texts, model '{server['model']}' at {server['url']} "
        f"({server['protocol']})",
        f"skipped rows: {skipped['total']} (empty {skipped['empty']}, malformed {skipped['malformed']}, "
        f"unknown label {skipped['unknown_label']})",
        *(f"  {example}" for example in skipped["examples"]),
    ]
    if skipped["unknown_labels"]:
        counts = ", ".join(f"{label!r} ({rows})" for label, rows in skipped["unknown_labels"].items())
        lines.append(f"  labels the server does not know: {counts}")
    lines.append(
        f"sent {report['texts']} texts in {throughput['requests']} requests (batch {settings['batch_size']}, "
        f"concurrency {settings['concurrency']}) in {throughput['seconds']:.2f} s: "
        f"{throughput['samples_per_second'] or 0:.1f} texts/s, {throughput['retries']} retries"
    )
    latency = throughput["latency_ms"]
    if latency:
        lines.append(
            f"request latency: p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, p99 {latency['p99']:.1f} ms "
            f"(max {latency['max']:.1f} ms)"
        )
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report["failed_by_kind"].items()))
    lines.append(f"failed texts: {report['failed']}" + (f" ({kinds})" if kinds else ""))
    for failure in report["failures"][:SHOWN_EXAMPLES]:
        lines.append(
            f"  #{failure['index']} {_short(repr(failure['text']), 60)}: {failure['kind']}: {failure['error']}"
        )
    if len(report["failures"]) > SHOWN_EXAMPLES:
        lines.append(f"  ... and {len(report['failures']) - SHOWN_EXAMPLES} more (all in the JSON report)")
    if report["metrics"]:
        lines += ["", f"metrics of the {report['answered']} answered texts:", format_metrics(report["metrics"])]
    parity = report["parity"]
    if parity is not None:
        lines.append("")
        head = f"parity with the eager model {parity['checkpoint']} (max_length {parity['max_length']}): "
        if "agreement" in parity:
            head += (
                f"{parity['compared']} texts, labels agree {parity['agreement']:.2%}, "
                f"largest probability difference {parity['max_abs_diff']:.2e}"
            )
        lines.append(head + (": OK" if parity["passed"] else f": FAILED: {parity['reason']}"))
        for row in parity.get("disagreements", [])[:SHOWN_EXAMPLES]:
            lines.append(
                f"  #{row['index']} {_short(repr(row['text']), 60)}: served {row['served']}, eager {row['eager']}"
            )
    return "\n".join(lines)


def write_report_dir(report: dict, directory: str | Path) -> list[Path]:
    """`evaluation.json` (the --json document) and, when texts were answered, `confusion_matrix.png`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "evaluation.json"]
    written[0].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if report["metrics"]:
        title = f"{report['server']['model']} on {Path(report['source']).name}" + (
            f" ({report['split']})" if report["split"] else ""
        )
        written.append(plot_confusion_matrix(report["metrics"], directory / "confusion_matrix.png", title))
    return written


def run(options: EvaluationOptions, load_reference: Callable[[str], EagerReference] | None = None) -> int:
    """The command line's work: evaluate, print (text or --json), write --report-dir; returns the exit code."""
    try:
        report = evaluate_served(options, load_reference)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (EvaluationError, ModelSourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
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
