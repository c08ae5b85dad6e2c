"""An evaluation's report: its exit code, the text shown on the terminal, and the --report-dir files."""

from __future__ import annotations

import json
from pathlib import Path

from .classification_metrics import format_metrics, plot_confusion_matrix

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3


SHOWN_EXAMPLES = 5  # failures and disagreements listed on the terminal (the JSON has them all)


def exit_code(report: dict) -> int:
    if report["parity"] is not None and not report["parity"]["passed"]:
        return EXIT_PARITY
    return EXIT_FAILED if report["failed"] else EXIT_OK


def shorten(text: str, width: int) -> str:
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
            f"  #{failure['index']} {shorten(repr(failure['text']), 60)}: {failure['kind']}: {failure['error']}"
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
                f"  #{row['index']} {shorten(repr(row['text']), 60)}: served {row['served']}, eager {row['eager']}"
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
