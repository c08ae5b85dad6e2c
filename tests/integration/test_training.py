"""Training on transformers.Trainer is reproducible: same recipe and seed, same weights, bit for bit,
including a run that was stopped and resumed from its last epoch checkpoint."""

import json

import numpy as np
import pytest
import transformers

from emotion_triton.build.modeling import load_classifier, load_tokenizer, predict_logits
from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.build.training import TrainingPlanError, average_last_checkpoints, plan_training, training_arguments
from emotion_triton.data import load
from tests.helpers.servers import copy_repository

RECIPE = {"num_train_epochs": 3, "per_device_train_batch_size": 64, "learning_rate": 1e-3, "seed": 7}


def trained_logits(tmp_path, name, tiny_base, small_data, **recipe):
    run = tmp_path / name
    options = BuildOptions(
        base_model=str(tiny_base("bert")),
        data=str(small_data),
        repository=repository
        if (repository := tmp_path / f"{name}-repository").exists()
        else copy_repository(repository),
        average_last_epochs=2,
    )
    report = build(options, training_arguments(run, **{**RECIPE, **recipe}))
    checkpoint = run / "checkpoint"
    texts = load(str(small_data)).splits["validation"].texts
    logits = predict_logits(load_classifier(str(checkpoint), "-"), load_tokenizer(str(checkpoint), "-"), texts, 128)
    return logits, report


def test_the_same_recipe_and_seed_give_the_same_model_bit_for_bit(tmp_path, tiny_base, small_data):
    first, report = trained_logits(tmp_path, "first", tiny_base, small_data)
    second, _ = trained_logits(tmp_path, "second", tiny_base, small_data)
    assert np.array_equal(first, second)
    other_seed, _ = trained_logits(tmp_path, "other-seed", tiny_base, small_data, seed=8)
    assert not np.array_equal(first, other_seed)  # the seed does reach the head's initial weights and the batches

    training = report["training"]
    assert [row["epoch"] for row in training["history"]] == [1, 2, 3]
    assert all(0 <= row["validation_accuracy"] <= 1 and row["train_loss"] > 0 for row in training["history"])
    assert training["steps"] == 3 * training["steps_per_epoch"]
    assert training["averaged_checkpoints"] == [
        f"checkpoint-{2 * training['steps_per_epoch']}",
        f"checkpoint-{training['steps']}",
    ]
    assert report["training_arguments"]["train_sampling_strategy"] == "group_by_length"
    # The plan checked before training counts steps as Trainer does.
    planned = plan_training(training_arguments(tmp_path / "elsewhere", **RECIPE), load(str(small_data)), 128, 2)
    assert (planned.steps_per_epoch, planned.steps) == (training["steps_per_epoch"], training["steps"])


def test_a_run_stopped_after_an_epoch_resumes_to_the_same_model(tmp_path, tiny_base, small_data, monkeypatch):
    uninterrupted, _ = trained_logits(tmp_path, "uninterrupted", tiny_base, small_data)

    real_save, saves = transformers.Trainer._save_checkpoint, []

    def stopped_after_the_first_epoch(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == 1:
            raise KeyboardInterrupt  # Ctrl-C right after epoch 1's checkpoint

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", stopped_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        trained_logits(tmp_path, "resumed", tiny_base, small_data)
    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", real_save)
    resumed, report = trained_logits(tmp_path, "resumed", tiny_base, small_data)

    assert report["training"]["resumed_from"] == f"checkpoint-{report['training']['steps_per_epoch']}"
    assert np.array_equal(resumed, uninterrupted)


def test_another_recipe_in_the_same_folder_is_refused_and_its_checkpoints_kept(tmp_path, tiny_base, small_data):
    trained_logits(tmp_path, "run", tiny_base, small_data, learning_rate=5e-4)
    kept = sorted(path.name for path in (tmp_path / "run").glob("checkpoint*"))
    with pytest.raises(
        TrainingPlanError,
        match=r"run holds the checkpoints of another recipe \(learning_rate: 0.0005 there, 0.001 now\)",
    ):
        trained_logits(tmp_path, "run", tiny_base, small_data)
    assert sorted(path.name for path in (tmp_path / "run").glob("checkpoint*")) == kept
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["training"]["learning_rate"] == 5e-4


def test_averaging_needs_as_many_checkpoints_as_epochs_it_averages(tmp_path, tiny_base):
    model = load_classifier(str(tiny_base("bert")), "-", ["a", "b"])
    (tmp_path / "checkpoint-10").mkdir()
    with pytest.raises(ValueError, match="average_last_epochs=3, but .* holds 1 checkpoints"):
        average_last_checkpoints(model, tmp_path, 3)
