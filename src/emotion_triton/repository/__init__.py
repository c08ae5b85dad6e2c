"""The base layer: the Triton model repository, whose config.pbtxt files are the one source of truth.

Importable by every other layer; it imports none of them.
"""

from .model_config import (
    BUILD_OUTPUTS,
    CLASSIFIER_CONFIGS,
    CLASSIFIER_FILES,
    DEFAULT_CHECKPOINT,
    DEFAULT_ENSEMBLE,
    DEFAULT_REPOSITORY,
    KEPT_VERSIONS,
    OFFLINE_BUILD_COMMAND,
    OFFLINE_PRESET,
    PROJECT_ROOT,
    RUNS_DIR,
    SERVER_FILE,
    SOURCE_VERSION,
    Ensemble,
    copy_sources,
    parameter,
    parse_config,
    set_parameter,
)

__all__ = [
    "BUILD_OUTPUTS",
    "CLASSIFIER_CONFIGS",
    "CLASSIFIER_FILES",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_ENSEMBLE",
    "DEFAULT_REPOSITORY",
    "KEPT_VERSIONS",
    "OFFLINE_BUILD_COMMAND",
    "OFFLINE_PRESET",
    "PROJECT_ROOT",
    "RUNS_DIR",
    "SERVER_FILE",
    "SOURCE_VERSION",
    "Ensemble",
    "copy_sources",
    "parameter",
    "parse_config",
    "set_parameter",
]
