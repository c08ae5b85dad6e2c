"""The benchmark's report: the summary of results.json, results.md's tables and the PNG plots."""

from __future__ import annotations

from pathlib import Path

from emotion_triton.serving.local_server import DEFAULT_CLASSIFIER


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
