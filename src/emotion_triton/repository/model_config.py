"""The Triton model repository: its config.pbtxt files are the one source of truth.

Model names, inputs, outputs, labels and batching limits are read from the
configurations here, parsed with Triton's own protobuf definitions.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ..paths import PROJECT_ROOT
from . import variants
from .variants import CPU_VARIANTS, VARIANTS

DEFAULT_REPOSITORY = PROJECT_ROOT / "model_repository"
# A build's run folder is runs/<preset>/; the offline preset's checkpoint is where the benchmark and
# the evaluation's --compare-with look when given no path.
RUNS_DIR = PROJECT_ROOT / "runs"
OFFLINE_PRESET = "minilm-offline"
DEFAULT_CHECKPOINT = RUNS_DIR / OFFLINE_PRESET / "checkpoint"
OFFLINE_BUILD_COMMAND = f"python build/build.py --preset {OFFLINE_PRESET}"
DEFAULT_ENSEMBLE = "emotion"
# The classifier variants a CPU host serves: variant -> the tritonserver --model-config-name that
# selects it (emotion_classifier/configs/<name>.pbtxt, derived from its config.pbtxt: variants.py).
CLASSIFIER_CONFIGS = {name: VARIANTS[name].config_name for name in CPU_VARIANTS}


# Written by build/build.py; never part of a repository's source (see .gitignore).
BUILD_OUTPUTS = ("*.pt", "*.onnx", "tokenizer.json", "build_report.json", "*.png", "__pycache__")
# The version folder that holds the models' code in git (model.py and its modules). The first build
# installs into it; every later build installs a new numbered folder with a copy of this code beside
# the build's files, so a version is self-contained: rolling back restores its code too.
SOURCE_VERSION = 1
# Built versions a repository keeps: the served one and the two before it (a rollback needs the one
# before; an older one costs only disk). Older ones are removed when a new version becomes the served one.
KEPT_VERSIONS = 3


def copy_sources(target: str | Path, source: str | Path = DEFAULT_REPOSITORY) -> Path:
    """A copy of a model repository's tracked configs and code: no build outputs, no state, no derived configs."""
    import shutil

    derived = ("configs", f"{variants.STATE_FILE}*")
    return Path(shutil.copytree(source, target, ignore=shutil.ignore_patterns(*BUILD_OUTPUTS, *derived)))


def parse_config(path: str | Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def parameter(config: model_config_pb2.ModelConfig, key: str) -> str:
    if key not in config.parameters:
        raise KeyError(f"model '{config.name}' has no parameter '{key}'")
    return config.parameters[key].string_value


def set_parameter(path: str | Path, key: str, value: str) -> None:
    """Rewrites one `parameters` value in place, keeping the file's layout and comments."""
    path = Path(path)
    text = path.read_text()
    pattern = re.compile(r'(key:\s*"' + re.escape(key) + r'"\s*value\s*\{\s*string_value:\s*)"(?:[^"\\]|\\.)*"')
    quoted = json.dumps(value)  # a protobuf text string literal accepts JSON's escapes
    new_text, count = pattern.subn(lambda m: m.group(1) + quoted, text)
    if count != 1:
        raise ValueError(f"{path}: expected one parameter '{key}', found {count}")
    if parameter(text_format.Parse(new_text, model_config_pb2.ModelConfig()), key) != value:
        raise ValueError(f"{path}: rewriting parameter '{key}' did not round-trip")
    path.write_text(new_text)


@dataclass(frozen=True)
class Ensemble:
    """The ensemble and its three steps, found by reading the repository's configs."""

    repository: Path
    name: str
    tokenizer: str
    classifier: str
    postprocess: str

    @classmethod
    def read(cls, repository: str | Path = DEFAULT_REPOSITORY, name: str = DEFAULT_ENSEMBLE) -> Ensemble:
        repository = Path(repository)
        config = parse_config(repository / name / "config.pbtxt")
        steps = [step.model_name for step in config.ensemble_scheduling.step]
        if len(steps) != 3:
            raise ValueError(f"ensemble '{name}' should have 3 steps (tokenizer, classifier, postprocess): {steps}")
        return cls(repository, name, *steps)

    @property
    def steps(self) -> list[str]:
        return [self.tokenizer, self.classifier, self.postprocess]

    def config_path(self, model: str, variant: str | None = None) -> Path:
        directory = self.repository / model
        return directory / "configs" / f"{variant}.pbtxt" if variant else directory / "config.pbtxt"

    def config(self, model: str, variant: str | None = None) -> model_config_pb2.ModelConfig:
        """`model`'s config as tritonserver --model-config-name=`variant` loads it (the classifier's
        variants derived from its config.pbtxt here, not read back from their generated files)."""
        names = {v.config_name: name for name, v in VARIANTS.items() if v.derive is not None}
        if model == self.classifier and variant in names:
            return variants.derived_classifier_config(self.config(model), names[variant])
        path = self.config_path(model, variant)
        return parse_config(path if path.is_file() else self.config_path(model))  # Triton's rule too

    def write_derived_configs(self) -> list[Path]:
        """The classifier's variant configs and the ensemble's pins of the served version (variants.py)."""
        served = self.pinned_version()
        return variants.write_derived_configs(
            self.repository, self.name, self.classifier, self.versioned, served if served > 0 else None
        )

    def classifier_module(self, name: str):
        """A module of the classifier's code (SOURCE_VERSION's folder: length_buckets, onnx_session), the
        one implementation the Python step, the build's checks and the benchmark share."""
        path = self.repository / self.classifier / str(SOURCE_VERSION) / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"emotion_classifier_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    # Versions. The tokenizer and the classifier carry a build's files and are versioned together:
    # version N of the model is emotion_tokenizer/N/ (tokenizer.json) and emotion_classifier/N/
    # (model.pt, model.onnx, build_report.json). Which version serves is repository state outside git
    # (variants.STATE_FILE), which the ensemble's derived configs pin; with none, the ensemble's
    # config.pbtxt (-1) serves the newest version folder.

    @property
    def versioned(self) -> tuple[str, str]:
        """The models whose version folders hold a build's files."""
        return self.tokenizer, self.classifier

    def version_dir(self, model: str, version: int | None = None) -> Path:
        """`model`'s folder of `version` (default: the served version)."""
        return self.repository / model / str(self.served_version if version is None else version)

    def versions(self) -> list[int]:
        """Every version folder of the classifier, ascending (built or not)."""
        folder = self.repository / self.classifier
        return sorted(int(path.name) for path in folder.iterdir() if path.is_dir() and path.name.isdigit())

    def built_versions(self) -> list[int]:
        """The versions holding a build's files (a model file, its report and the tokenizer), ascending."""
        return [version for version in self.versions() if self.is_built(version)]

    def pinned_version(self) -> int:
        """The served version the repository's state pins, or -1 (none: the newest folder serves)."""
        return int(variants.read_state(self.repository).get("served", -1))

    @property
    def served_version(self) -> int:
        """The version the ensemble serves: its pin, or with -1 the newest folder (SOURCE_VERSION if none)."""
        pin = self.pinned_version()
        return pin if pin > 0 else max(self.versions(), default=SOURCE_VERSION)

    def set_served_version(self, version: int) -> None:
        """Pins `version` as the served one (repository state) and rewrites the ensemble's derived configs."""
        variants.write_state(self.repository, served=version)
        self.write_derived_configs()

    @property
    def last_installed_version(self) -> int:
        """The highest version ever installed (0: none), which a new version's number stays above."""
        return int(variants.read_state(self.repository).get("last_installed", 0))

    def record_installed_version(self, version: int) -> None:
        variants.write_state(self.repository, last_installed=version)

    @property
    def tokenizer_file(self) -> Path:
        return self.version_dir(self.tokenizer) / "tokenizer.json"

    @property
    def model_file(self) -> Path:
        return self.version_dir(self.classifier) / "model.pt"

    @property
    def onnx_file(self) -> Path:
        return self.version_dir(self.classifier) / "model.onnx"

    def served_file(self, variant: str, version: int | None = None) -> Path:
        """The classifier file a variant (variants.VARIANTS) serves."""
        return self.version_dir(self.classifier, version) / VARIANTS[variant].served_file

    @property
    def report_file(self) -> Path:
        return self.version_dir(self.classifier) / "build_report.json"

    def report(self, version: int | None = None) -> dict:
        """The build report of `version` (default: the served one)."""
        return json.loads((self.version_dir(self.classifier, version) / "build_report.json").read_text())

    @property
    def labels(self) -> list[str]:
        return json.loads(parameter(self.config(self.postprocess), "labels"))

    @property
    def max_length(self) -> int:
        return int(parameter(self.config(self.tokenizer), "max_length"))

    @property
    def max_batch_size(self) -> int:
        return self.config(self.name).max_batch_size

    @property
    def text_input(self) -> str:
        return self.config(self.name).input[0].name

    @property
    def outputs(self) -> tuple[str, str]:
        """(label, scores): the ensemble's two outputs, in its config's order."""
        label, scores = (output.name for output in self.config(self.name).output)
        return label, scores

    def is_built(self, version: int | None = None) -> bool:
        """Whether `version` (default: the served one) holds model.pt and the tokenizer."""
        return (self.version_dir(self.classifier, version) / "model.pt").is_file() and (
            self.version_dir(self.tokenizer, version) / "tokenizer.json"
        ).is_file()
