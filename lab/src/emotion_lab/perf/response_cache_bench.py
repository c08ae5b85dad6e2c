"""The response cache's benchmark: the default variant, one text per request, on streams in which a
share of the texts repeat an earlier one (retweets, templates), with Triton's response cache off and on.

Each point gets its own slice of the texts, so no point is served from what an earlier point put in
the cache; the cache-off and cache-on servers get the same streams.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tqdm.auto import tqdm

from emotion_triton.serving.local_server import DEFAULT_CLASSIFIER
from emotion_triton.serving.prometheus import metric_total, triton_metrics

from .bench_phases import BenchOptions, ensemble_sender, measure, serve_repository
from .loadgen import repeating_texts

REPEAT_SHARES = (0.0, 0.3, 0.9)
CONCURRENCY = (1, 16)
# Longer than any window sends (closed_loop cycles its list: a second pass would repeat everything).
STREAM_LENGTH = 40_000


def streams(texts: list[str]) -> dict[tuple[float, int], list[str]]:
    """{(repeat share, clients): the point's stream}, each drawing its new texts from its own slice of
    `texts` without their duplicates (a data set's own repeats would count as new texts)."""
    grid = [(share, clients) for share in REPEAT_SHARES for clients in CONCURRENCY]
    unique = list(dict.fromkeys(texts))
    return {
        point: repeating_texts(unique[index :: len(grid)], point[0], STREAM_LENGTH, seed=index)
        for index, point in enumerate(grid)
    }


def sweep_response_cache(repository: Path, texts: list[str], options: BenchOptions) -> list[dict]:
    """The grid of `streams`, cache off (0 MiB) then on (options.response_cache_mb), with the
    classifier's cache hits and misses from Triton's metrics."""
    points = []
    grid = streams(texts)
    for cache_mb in (0, options.response_cache_mb):
        server = serve_repository(repository, options.results, DEFAULT_CLASSIFIER, response_cache_mb=cache_mb)
        system = f"triton-{DEFAULT_CLASSIFIER}-fp32, cache {f'{cache_mb} MiB' if cache_mb else 'off'}"
        try:
            sender, classifier = ensemble_sender(server), server.ensemble.classifier
            for (share, clients), stream in tqdm(grid.items(), desc=system, unit="point", dynamic_ncols=True):
                before = triton_metrics(server.metrics_url)
                result = asyncio.run(measure(sender, stream, clients, 1, options.seconds))
                after = triton_metrics(server.metrics_url)
                hits, misses = (
                    metric_total(after, name, classifier) - metric_total(before, name, classifier)
                    for name in ("nv_cache_num_hits_per_model", "nv_cache_num_misses_per_model")
                )
                points.append(
                    {
                        "system": system,
                        "response_cache_mb": cache_mb,
                        "repeat_share": share,
                        **result.as_dict(),
                        "cache_hit_share": hits / (hits + misses) if hits + misses else None,
                    }
                )
        finally:
            server.stop()
    return points


def cache_summary(points: list[dict]) -> dict:
    """Cache on / cache off, texts/s and p50, at each repeat share and concurrency."""
    off = {(p["repeat_share"], p["concurrency"]): p for p in points if not p["response_cache_mb"]}
    summary = {}
    for p in points:
        base = off.get((p["repeat_share"], p["concurrency"]))
        if p["response_cache_mb"] and base and base["texts_per_second"] and base["p50_ms"]:
            key = f"cache_repeats{round(100 * p['repeat_share'])}pct_c{p['concurrency']}"
            summary[f"{key}_texts_per_second_on_vs_off"] = p["texts_per_second"] / base["texts_per_second"]
            summary[f"{key}_p50_on_vs_off"] = p["p50_ms"] / base["p50_ms"]
    return summary


def cache_table(points: list[dict]) -> str:
    if not points:
        return ""
    lines = [
        "| response cache | repeated texts | clients | texts/s | p50 ms | p95 ms | errors | classifier cache hits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        hits = "" if p["cache_hit_share"] is None else f"{p['cache_hit_share']:.0%}"
        lines.append(
            f"| {p['system']} | {p['repeat_share']:.0%} | {p['concurrency']} | {p['texts_per_second']:.1f} | "
            f"{p['p50_ms']:.2f} | {p['p95_ms']:.2f} | {p['errors']} | {hits} |"
        )
    return "\n".join(lines)


def plot_response_cache(points: list[dict], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        return
    systems = list(dict.fromkeys(p["system"] for p in points))
    fig, axes = plt.subplots(1, len(CONCURRENCY), figsize=(11, 4))
    width = 0.8 / len(systems)
    for axis, clients in zip(axes, CONCURRENCY, strict=True):
        for index, system in enumerate(systems):
            rows = sorted(
                (p for p in points if p["system"] == system and p["concurrency"] == clients),
                key=lambda p: p["repeat_share"],
            )
            xs = [i + index * width for i in range(len(rows))]
            axis.bar(xs, [p["texts_per_second"] for p in rows], width, label=system, color=plt.cm.tab10(index))
            axis.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(rows))])
            axis.set_xticklabels([f"{p['repeat_share']:.0%} repeated" for p in rows])
        axis.set_title(f"{clients} client(s), one text per request")
        axis.set_ylabel("texts/s")
        axis.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Triton's response cache on the classifier step")
    fig.tight_layout()
    fig.savefig(folder / "response_cache.png", dpi=110)
    plt.close(fig)
