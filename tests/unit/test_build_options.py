"""Options checked before work starts: a preset with explicit options that cannot finish as asked is
refused in one line before the model loads, or, where a sensible reading exists, run that way with one
warning line (issue 24: `--preset minilm-offline --max-steps 400` trained 9 minutes, then failed)."""

import logging
import math

import pytest

from emotion_triton.build import pipeline
from emotion_triton.build.command import build_from_command_line, parse_build_arguments
from emotion_triton.build.training import TrainingPlanError, _fingerprint, plan_training, training_arguments
from emotion_triton.data import load
from tests.helpers.build_command import command_line

TRAIN_ROWS = 600  # small_data's train split


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the build gets as far as loading a model: a refusal must come before."""

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were refused")

    monkeypatch.setattr(pipeline, "load_classifier", loaded)
    monkeypatch.setattr(pipeline, "load_tokenizer", loaded)


def plan(tmp_path, small_data, average_last_epochs=1, **settings):
    args = training_arguments(tmp_path / "run", **{"per_device_train_batch_size": 32, **settings})
    return plan_training(args, load(str(small_data)), 128, average_last_epochs)


def test_max_steps_shorter_than_an_epoch_trains_on_part_of_the_data_and_says_so(tmp_path, small_data, caplog):
    with caplog.at_level(logging.WARNING):
        planned = plan(tmp_path, small_data, max_steps=4)
    steps_per_epoch = math.ceil(TRAIN_ROWS / 32)
    assert (planned.steps_per_epoch, planned.steps, planned.epochs) == (steps_per_epoch, 4, 1)
    assert planned.warnings == [
        f"--max_steps 4 is shorter than one epoch ({steps_per_epoch} steps of 32 texts): "
        f"the model sees 128 of the {TRAIN_ROWS} training texts once"
    ]
    assert [record.getMessage() for record in caplog.records] == [f"warning: {planned.warnings[0]}"]


@pytest.mark.parametrize(
    ("settings", "epochs", "installed"),
    [
        ({"max_steps": 4}, 1, "the last epoch's weights"),
        ({"num_train_epochs": 2}, 2, "the mean of all 2 epochs' weights"),
        ({"max_steps": 20}, 2, "the mean of all 2 epochs' weights"),  # 19 steps an epoch: a second, partial one
    ],
)
def test_averaging_more_epochs_than_the_run_saves_averages_those_it_saves(
    tmp_path, small_data, settings, epochs, installed
):
    planned = plan(tmp_path, small_data, average_last_epochs=3, **settings)
    assert (planned.epochs, planned.average_last_epochs) == (epochs, epochs)
    option = next(iter(settings))
    assert planned.warnings[-1] == (
        f"--average_last_epochs 3, but --{option} {settings[option]} saves {epochs} epoch "
        f"checkpoint{'s' if epochs > 1 else ''}: installing {installed}"
    )


def test_a_run_long_enough_plans_without_a_warning(tmp_path, small_data):
    planned = plan(tmp_path, small_data, average_last_epochs=3, num_train_epochs=3, gradient_accumulation_steps=2)
    assert (planned.steps_per_epoch, planned.epochs, planned.average_last_epochs) == (10, 3, 3)
    assert planned.warnings == [] and planned.resume_from is None


@pytest.mark.parametrize(
    ("average_last_epochs", "settings", "message"),
    [
        (0, {}, "--average_last_epochs must be 1 or more, not 0"),
        (
            3,
            {"save_strategy": "no"},
            "--average_last_epochs 3 averages epoch checkpoints: it needs --save_strategy epoch",
        ),
        (1, {"num_train_epochs": 0}, "--num_train_epochs 0 and --max_steps -1 train no step"),
    ],
)
def test_options_that_cannot_give_a_model_are_refused(tmp_path, small_data, average_last_epochs, settings, message):
    with pytest.raises(TrainingPlanError, match=message):
        plan(tmp_path, small_data, average_last_epochs, **settings)


def test_an_output_folder_of_another_recipe_is_refused_and_kept(tmp_path, small_data, no_model_load, capsys):
    """A run of the preset with another seed and learning rate is in the folder: it is neither resumed nor deleted."""
    argv = command_line(tmp_path, "--data", str(small_data))
    _, earlier = parse_build_arguments([*argv, "--seed", "7", "--learning_rate", "5e-4"])
    earlier_recipe = _fingerprint(earlier, load(str(small_data)), 128)
    (tmp_path / "run" / "checkpoint-500").mkdir(parents=True)
    (tmp_path / "run" / "recipe.json").write_text(earlier_recipe)
    assert build_from_command_line(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"build failed: {tmp_path / 'run'} holds the checkpoints of another recipe (learning_rate: 0.0005 there, "
        f"0.0001 now; seed: 7 there, 42 now): give another --output_dir, or delete {tmp_path / 'run'} to start over"
    )
    assert (tmp_path / "run" / "checkpoint-500").is_dir()
    assert (tmp_path / "run" / "recipe.json").read_text() == earlier_recipe


def test_a_trained_folder_without_a_recipe_is_refused(tmp_path, small_data, no_model_load):
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    with pytest.raises(TrainingPlanError, match=r"holds the checkpoints of another recipe \(no recipe.json\)"):
        plan(tmp_path, small_data, max_steps=4)


@pytest.mark.parametrize("layout", ["missing", "empty", "validation only"])
def test_a_missing_data_folder_is_refused_in_one_line_before_anything_is_written(
    tmp_path, small_data, no_model_load, capsys, layout
):
    data = tmp_path / "my-data"
    if layout != "missing":
        data.mkdir()
    if layout == "validation only":
        (data / "validation.txt").write_text((small_data / "validation.txt").read_text())
    assert build_from_command_line(command_line(tmp_path, "--data", str(data))) == 2
    (line,) = capsys.readouterr().err.splitlines()
    expected = {
        "missing": f"build failed: --data {data}: no such file or directory; expected a folder with train and validation",
        "empty": f"build failed: {data} holds no train/validation/test file",
        "validation only": f"build failed: --data {data}: fine-tuning needs a train and a validation split",
    }[layout]
    assert line.startswith(expected)
    assert not (tmp_path / "run").exists()
