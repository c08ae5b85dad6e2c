"""The issue's build command on a tiny model: it finishes, and warns before training."""

import json
import logging

from emotion_triton.build.command import build_from_command_line
from tests.helpers.build_command import command_line


def test_the_issue_s_command_finishes_and_warns_before_training(tmp_path, tiny_base, small_data, caplog):
    """`--preset minilm-offline --max-steps N` with N under one epoch (the preset averages 3 epochs)."""
    argv = command_line(tmp_path, "--base_model", str(tiny_base("bert")), "--data", str(small_data), "--max-steps", "4")
    with caplog.at_level(logging.INFO):
        assert build_from_command_line(argv) == 0
    messages = [record.getMessage() for record in caplog.records]
    warnings = [message for message in messages if message.startswith("warning: ")]
    assert len(warnings) == 2 and "shorter than one epoch" in warnings[0]
    assert warnings[1].endswith("saves 1 epoch checkpoint: installing the last epoch's weights")
    report = json.loads((tmp_path / "run" / "build_report.json").read_text())
    assert report["training"]["steps"] == 4 and report["training"]["averaged_checkpoints"] == []
    assert report["training"]["warnings"] == [warning.removeprefix("warning: ") for warning in warnings]
