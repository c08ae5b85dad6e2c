"""Short bounded headless Locust runs of loadtest/locustfile.py against a real tritonserver."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_lab import loadtest

PROJECT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"
LOCUSTFILE = PROJECT / "loadtest" / "locustfile.py"


# -- headless runs against a real server ----------------------------------------------------------
def run_locust(server, protocol, emotion_data, tmp_path, *options) -> tuple[subprocess.CompletedProcess, dict]:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    command = [
        LOCUST,
        "-f",
        LOCUSTFILE,
        "--headless",
        "--only-summary",
        "--csv",
        tmp_path / "run",
        "--html",
        tmp_path / "run.html",
        "--host",
        f"{protocol}://{url}",
        "--data",
        emotion_data / "validation.txt",
        "--min-accuracy",
        "0",  # a tiny random model: accuracy is reported, not judged
        "--max-p95-ms",
        "30000",  # two shared cores: latency and throughput are reported, not judged
        "--min-texts-per-second",
        "1",
        *options,
    ]
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120)
    with open(tmp_path / "run_stats.csv", newline="") as handle:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}
    return result, rows


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_short_headless_run_reports_requests_texts_and_accuracy(protocol, served, emotion_data, tmp_path):
    server = served("distilbert")
    result, rows = run_locust(server, protocol, emotion_data, tmp_path, "-u", "2", "-r", "2", "-t", "5s")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    total = rows[("", "Aggregated")]
    requests = [row for (kind, _), row in rows.items() if kind == loadtest.REQUEST_TYPES[protocol]]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0
    assert sum(int(row["Request Count"]) for row in requests) == int(total["Request Count"])
    assert {row["Name"] for row in requests} >= {"batch 1", "accuracy batch 16"}
    texts = rows[loadtest.TEXTS]
    assert int(texts["Request Count"]) > int(total["Request Count"])  # batches of 8, 16 and 64 count per text
    assert float(texts["Requests/s"]) > float(total["Requests/s"])
    accuracy = rows[loadtest.ACCURACY]
    assert int(accuracy["Request Count"]) >= 16
    assert 0 <= float(accuracy["Average Content Size"]) <= 100  # the running accuracy in percent
    with open(tmp_path / "run_failures.csv", newline="") as handle:
        failures = list(csv.DictReader(handle))
    assert all(row["Method"] == "ACCURACY" and row["Error"].startswith("wrong label") for row in failures)
    assert "answered texts" in (tmp_path / "run.html").read_text(encoding="utf-8")
    assert "result:      PASS" in result.stdout
    for line in ("texts/s", "accuracy:", "CPU client:", "CPU machine:"):
        assert line in result.stdout
    assert f"tritonserver pid {server.process.pid} and its backend stubs" in result.stdout  # found by its port


@pytest.mark.server
def test_a_crossed_threshold_fails_the_run_and_the_step_ramp_reports_each_step(served, emotion_data, tmp_path):
    result, rows = run_locust(
        served("distilbert"),
        "grpc",
        emotion_data,
        tmp_path,
        "--shape",
        "step",
        "--step-users",
        "1",
        "--step-seconds",
        "2",
        "--step-max-users",
        "2",
        "--min-texts-per-second",
        "1e9",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "threshold crossed:" in output and "--min-texts-per-second 1e+09" in output
    assert "result:      FAIL (1 thresholds crossed)" in result.stdout
    assert "step ramp:" in result.stdout and "latency knee:" in result.stdout
    table = result.stdout.split("step ramp:")[1].splitlines()[2:4]
    assert [int(line.split()[0]) for line in table] == [1, 2]
    assert int(rows[("", "Aggregated")]["Request Count"]) > 0
