"""The plot of a step ramp's history (loadtest/plot.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .options import TEXTS


def plot_history(history_csv: str | Path, png: str | Path) -> Path:
    """Texts/s and p95 latency against users, from a run with `--csv-full-history` (a step ramp)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    texts: dict[int, list[float]] = {}
    p95: dict[int, list[float]] = {}
    with open(history_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            users = int(row["User Count"])
            if (row["Type"], row["Name"]) == TEXTS and row["Requests/s"] not in ("", "N/A"):
                texts.setdefault(users, []).append(float(row["Requests/s"]))
            elif row["Name"] == "Aggregated" and row["95%"] not in ("", "N/A") and users:
                p95.setdefault(users, []).append(float(row["95%"]))
    users = sorted(u for u in texts if u)
    fig, throughput = plt.subplots(figsize=(7, 4.5))
    throughput.plot(users, [float(np.median(texts[u])) for u in users], marker="o", color="tab:blue")
    throughput.set_xlabel("Locust users")
    throughput.set_ylabel("texts/s (median of the step)", color="tab:blue")
    latency = throughput.twinx()
    with_latency = [u for u in users if u in p95]
    latency.plot(with_latency, [float(np.median(p95[u])) for u in with_latency], marker="s", color="tab:red")
    latency.set_ylabel("p95 latency, ms (median of the step)", color="tab:red")
    throughput.set_ylim(bottom=0)
    latency.set_ylim(bottom=0)
    throughput.grid(True, alpha=0.3)
    fig.suptitle("emotion ensemble under a Locust step ramp")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)
