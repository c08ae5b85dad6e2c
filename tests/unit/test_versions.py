"""The repository's versions without a server: numbering, the served pin, what is kept and removed,
all of it repository state outside the tracked files."""

from __future__ import annotations

import os

import pytest

from emotion_triton.build.torchscript_export import check_same_contract
from emotion_triton.repository import KEPT_VERSIONS, SOURCE_VERSION, STATE_FILE, Ensemble, copy_sources
from emotion_triton.repository.versions import (
    next_version,
    prune,
    remove_version,
    server_file,
    serving_server,
    versions_above_served,
    write_server_file,
)


def fake_build(ensemble: Ensemble) -> int:
    """A version as install() lays it out (the files' contents do not matter here)."""
    version = next_version(ensemble)
    for model, names in (
        (ensemble.classifier, ("model.pt", "model.onnx", "build_report.json")),
        (ensemble.tokenizer, ("tokenizer.json",)),
    ):
        folder = ensemble.version_dir(model, version)
        folder.mkdir(exist_ok=True)
        for name in names:
            (folder / name).write_text("{}")
    return version


@pytest.fixture
def ensemble(tmp_path) -> Ensemble:
    return Ensemble.read(copy_sources(tmp_path / "model_repository"))


def test_the_checkout_is_unpinned_and_serves_its_newest_folder(ensemble):
    assert ensemble.pinned_version() == -1 and ensemble.served_version == SOURCE_VERSION
    assert ensemble.built_versions() == [] and not ensemble.is_built()
    assert [fake_build(ensemble), fake_build(ensemble)] == [1, 2]
    assert ensemble.served_version == 2, "-1: the newest folder, as Triton's latest policy loads it"


def test_the_pin_is_repository_state_that_every_config_name_serves(ensemble):
    tracked = ensemble.config_path(ensemble.name).read_text()
    fake_build(ensemble)
    ensemble.set_served_version(1)
    assert ensemble.config_path(ensemble.name).read_text() == tracked, "the tracked config is never rewritten"
    assert (ensemble.repository / STATE_FILE).is_file()
    for config_name in ("gpu", "cpu", "onnx"):
        config = ensemble.config(ensemble.name, config_name)
        pins = {step.model_name: step.model_version for step in config.ensemble_scheduling.step}
        assert pins == {ensemble.tokenizer: 1, ensemble.classifier: 1, ensemble.postprocess: -1}
    assert Ensemble.read(ensemble.repository).served_version == 1, "a restart reads the same pin"


def test_a_version_number_is_never_used_twice(ensemble):
    for _ in range(3):
        fake_build(ensemble)
    ensemble.set_served_version(2)
    assert versions_above_served(ensemble) == [3]
    remove_version(ensemble, 3)
    assert fake_build(ensemble) == 4, "the removed 3 may still be in the server's response cache"
    assert ensemble.last_installed_version == 4


def test_old_versions_go_beyond_the_kept_number_and_version_1_keeps_its_code(ensemble):
    versions = [fake_build(ensemble) for _ in range(5)]
    ensemble.set_served_version(versions[-1])
    assert prune(ensemble) == versions[: len(versions) - KEPT_VERSIONS]
    assert ensemble.built_versions() == versions[-KEPT_VERSIONS:]
    code = ensemble.version_dir(ensemble.classifier, SOURCE_VERSION)
    assert sorted(p.name for p in code.iterdir()) == sorted(
        p.name for p in (copy_sources(ensemble.repository.parent / "fresh") / ensemble.classifier / "1").iterdir()
    ), "version 1 lost its build's files only"
    assert not ensemble.version_dir(ensemble.tokenizer, 2).exists()


def test_a_new_version_keeps_the_labels_and_length_of_the_others(ensemble):
    fake_build(ensemble)
    check_same_contract(ensemble, ensemble.labels, ensemble.max_length)
    with pytest.raises(ValueError, match="labels .* differ from those of the versions"):
        check_same_contract(ensemble, ["a", "b"], ensemble.max_length)
    with pytest.raises(ValueError, match="--max_length 64 differs"):
        check_same_contract(ensemble, ensemble.labels, 64)


def test_the_server_file_names_a_live_server_only(ensemble):
    repository = ensemble.repository
    assert serving_server(repository) is None
    write_server_file(repository, "127.0.0.1:1", "key", os.getpid(), "onnx")
    assert oct(server_file(repository).stat().st_mode & 0o777) == "0o600", "it holds the admin key"
    assert repository.resolve() not in server_file(repository).resolve().parents, "never in the model repository"
    assert serving_server(repository) == {
        "http_url": "127.0.0.1:1",
        "admin_key": "key",
        "pid": os.getpid(),
        "classifier": "onnx",
    }
    write_server_file(repository, "127.0.0.1:1", "key", 2**22 + 12345, "onnx")  # no such process
    assert serving_server(repository) is None
    server_file(repository).unlink()
