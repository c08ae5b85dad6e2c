"""Model versions on a real local server: a checked roll-out and a rollback under a closed-loop load
lose no request and switch the answers; broken versions are refused while the old one keeps answering."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

import pytest

from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.build.training import training_arguments
from emotion_triton.client import EmotionClient
from emotion_triton.repository import Ensemble
from emotion_triton.repository.versions import serving_server
from emotion_triton.serving.rollout import RolloutRefused, ServerControl, roll_back, roll_out
from tests.helpers.rollout import (
    CLIENTS,
    PROBES,
    ClosedLoop,
    cache_hits,
    install_copy,
    single_label_data,
    skew_classifier_bias,
)
from tests.helpers.servers import start_server

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def versioned(built_repository, tmp_path_factory):
    """(repository, server, ensemble): a copy of the tiny distilbert build (version 1) served by its own
    local server, with Triton's response cache on (the classifier step's)."""
    source, _ = built_repository("distilbert")
    root = tmp_path_factory.mktemp("versions")
    repository = root / "model_repository"
    shutil.copytree(source, repository)
    server = start_server(repository, root, response_cache_mb=16)
    yield repository, server, Ensemble.read(repository)
    server.stop()


def test_a_roll_out_and_a_rollback_under_load_lose_no_request(
    versioned, tiny_base, small_data, validation_texts, tmp_path
):
    repository, server, ensemble = versioned
    texts = validation_texts[:PROBES]
    assert serving_server(repository)["http_url"] == server.http_url, "the server says where it serves"
    with EmotionClient(server.grpc_url) as client:
        old = tuple(client.infer(texts)[0])
    # The new model answers a label the served one gives none of the probe texts.
    new_label = next(label for label in ensemble.labels if label not in old)
    data = single_label_data(small_data, tmp_path / "data", new_label)
    recipe = {"max_steps": 12, "per_device_train_batch_size": 16, "learning_rate": 1e-2, "num_train_epochs": 1}

    with ClosedLoop(server.grpc_url, texts) as load:
        time.sleep(1.0)
        building = time.monotonic()
        options = BuildOptions(
            base_model=str(tiny_base("distilbert")), data=str(data), repository=repository, labels=ensemble.labels
        )
        report = build(options, training_arguments(tmp_path / "run", **recipe))
        built = time.monotonic()
        # A server serves the repository: the build installed version 2 beside version 1 and served nothing new.
        assert (report["version"], ensemble.served_version, ensemble.built_versions()) == (2, 1, [1, 2])
        assert (ensemble.labels, ensemble.max_length) == (options.labels, 128)
        started = time.monotonic()
        assert roll_out(repository) == (1, 2)
        switched = time.monotonic()
        time.sleep(1.5)
        rolling_back = time.monotonic()
        assert roll_back(repository) == (2, 1)
        rolled_back = time.monotonic()
        time.sleep(1.5)
    ended = time.monotonic()

    assert not load.errors, f"{len(load.errors)} of {len(load.errors) + len(load.answers)} failed: {load.errors[:3]}"
    new = (new_label,) * PROBES
    # A request in flight when the pin moves is answered by the ensemble it entered: 0.5 s of grace.
    assert load.between(0, started) == {old}, "before the roll-out (and during the build): the old model's answers"
    assert load.between(started, ended) <= {old, new}, "one model's answers or the other's, never a mix"
    assert load.between(switched + 0.5, rolling_back) == {new}, "after the roll-out: the new model's"
    assert load.between(rolled_back + 0.5, ended) == {old}, "after the rollback: the old model's again"
    # The same texts again and again: answered from the response cache, by each version from its own
    # entries (the answers switched above, both ways).
    hits = cache_hits(server.metrics_url, ensemble.classifier)
    assert hits.get(1, 0) > 0 and hits.get(2, 0) > 0, hits
    # The served version is the ensemble's pin; version 2 stays until the next build replaces it.
    assert ensemble.served_version == 1 and ensemble.built_versions() == [1, 2]
    assert server.health_problem() is None
    print(
        f"\n{len(load.answers)} requests of {PROBES} texts ({CLIENTS} closed-loop clients) in "
        f"{ended - building + 1:.1f} s, none failed; build {built - building:.1f} s, roll-out "
        f"{switched - started:.1f} s, rollback {rolled_back - rolling_back:.1f} s; response-cache hits {hits}"
    )


def test_broken_versions_are_refused_while_the_old_one_keeps_answering(versioned, validation_texts):
    repository, server, ensemble = versioned
    texts = validation_texts[:PROBES]
    served = ensemble.served_version
    kept = [version for version in ensemble.built_versions() if version <= served]  # the ones above make way
    with EmotionClient(server.grpc_url) as client:
        old = tuple(client.infer(texts)[0])

    with ClosedLoop(server.grpc_url, texts) as load:
        # A corrupt file: refused before the server loads it; the command says so in one line and exits 1.
        corrupt = install_copy(ensemble)
        onnx_file = ensemble.served_file("onnx", corrupt)
        onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
        command = [sys.executable, "-m", "emotion_triton.commands.rollout", "--repository", str(repository)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"roll-out refused: version {corrupt} cannot be loaded: ")
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert corrupt not in ensemble.versions() and ensemble.served_version == served

        # A model that loads and answers, far below its build report's accuracy.
        sample = ensemble.report(served)["rollout_check"]
        rare = min(range(len(ensemble.labels)), key=lambda i: sample["labels"].count(ensemble.labels[i]))
        wrong = install_copy(ensemble)
        skew_classifier_bias(ensemble.served_file("onnx", wrong), rare)
        with pytest.raises(
            RolloutRefused, match=rf"version {wrong} scored [0-9.]+% on its \d+-text validation"
        ) as refused:
            roll_out(repository)
        print(f"\n{result.stderr.strip()[:160]}\nroll-out refused: {refused.value}")
        served_accuracy, report_accuracy = map(float, re.findall(r"([0-9.]+)% ", str(refused.value)))
        assert served_accuracy < report_accuracy - 10, "far below: every text gets the rarest label"
        assert wrong not in ensemble.versions() and ensemble.served_version == served
        time.sleep(0.5)

    assert not load.errors, f"{len(load.errors)} of {len(load.errors) + len(load.answers)} failed: {load.errors[:3]}"
    assert {labels for _, labels in load.answers} == {old}, "the old version answered every request"
    # The commands return once the versions they dropped are unloaded: the server is ready again.
    assert ensemble.built_versions() == kept and server.health_problem() is None
    print(
        f"\n{len(load.answers)} requests during the two refused roll-outs, none failed, all answered by version {served}"
    )


def test_a_restarted_server_serves_the_rolled_out_version_and_the_tracked_configs_stay_as_they_are(
    built_repository, tmp_path
):
    """Which version serves is repository state (never a rewrite of a tracked config): a server started
    again after a roll-out loads the ensemble pinned to the rolled-out version."""
    source, _ = built_repository("distilbert")
    repository = shutil.copytree(source, tmp_path / "model_repository")
    ensemble = Ensemble.read(repository)
    tracked = {path: path.read_text() for path in repository.glob("*/config.pbtxt")}
    server = start_server(repository, tmp_path)
    try:
        version = install_copy(ensemble)
        assert roll_out(repository) == (1, version)
    finally:
        server.stop()
    assert serving_server(repository) is None, "the stopped server's file is gone"
    server = start_server(repository, tmp_path)
    try:
        pins = ServerControl(server.http_url, server.options.admin_key).pins(ensemble.name)
        assert {pins[model] for model in ensemble.versioned} == {version}
        with EmotionClient(server.grpc_url) as client:
            assert client.classify(["i feel wonderful today"])[0].label in ensemble.labels
    finally:
        server.stop()
    assert {path: path.read_text() for path in repository.glob("*/config.pbtxt")} == tracked
