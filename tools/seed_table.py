"""The accuracy table of docs/results.md: one row per run of a recipe (a seed each), then the mean.

    python tools/seed_table.py runs/minilm-offline-seed42 runs/minilm-offline-seed43 runs/minilm-offline-seed44

Reads each run's build_report.json (its folder's, or a report file named directly) and prints, per
run, the validation accuracy after every epoch (Trainer's evaluation), the installed model's (the
build's own evaluation, after any checkpoint averaging), its weighted F1 and the training time.
"""

import argparse
import json
import statistics
from pathlib import Path


def row(report: dict) -> dict:
    history = report["training"]["history"]
    return {
        "seed": report["training_arguments"]["seed"],
        "epochs": [entry["validation_accuracy"] for entry in history],
        "installed": report["validation"]["accuracy"],
        "f1_weighted": report["validation"]["f1_weighted"],
        "averaged": report["training"].get("averaged_checkpoints") or [],
        "minutes": report["training"]["training_seconds"] / 60,
    }


def table(rows: list[dict]) -> str:
    epochs = max(len(r["epochs"]) for r in rows)
    head = ["seed", *(f"epoch {i}" for i in range(1, epochs + 1)), "**installed**", "weighted F1", "training"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [str(r["seed"]), *(f"{a:.2%}" for a in r["epochs"]), f"**{r['installed']:.2%}**"]
        lines.append("| " + " | ".join([*cells, f"{r['f1_weighted']:.2%}", f"{r['minutes']:.0f} min"]) + " |")
    mean = [statistics.mean(r["epochs"][i] for r in rows) for i in range(epochs)]
    installed = [r["installed"] for r in rows]
    spread = f" ± {statistics.stdev(installed):.2%}" if len(rows) > 1 else ""
    cells = ["mean", *(f"{a:.2%}" for a in mean), f"**{statistics.mean(installed):.2%}**{spread}"]
    lines.append("| " + " | ".join([*cells, f"{statistics.mean(r['f1_weighted'] for r in rows):.2%}", ""]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<name>) or build_report.json files")
    args = parser.parse_args()
    reports = [json.loads((path / "build_report.json" if path.is_dir() else path).read_text()) for path in args.runs]
    print(table([row(report) for report in reports]))


if __name__ == "__main__":
    main()
