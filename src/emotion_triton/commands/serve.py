"""The `emotion-serve` command (`make serve`): the supervised local tritonserver, with a model built first
when the repository has none.

    python -m emotion_triton.commands.serve [--classifier onnx|python|libtorch] [--http-port 8000] ...

It composes two layers that never import each other: the build (exporting the model card's
published checkpoint from the Hub on the first start) and the serving layer (preflight, tritonserver,
the canary supervision: emotion_triton.serving). Its options are the serving layer's.
"""

from __future__ import annotations

import logging
import sys

from ..hub import hub_reachable
from ..repository import Ensemble
from ..serving import supervisor
from ..serving.preflight import OFFLINE_BUILD_COMMAND, ServerError, relative_path

PUBLISHED_CHECKPOINT = "bhadresh-savani/distilbert-base-uncased-emotion"
logger = logging.getLogger(__name__)


def ensure_built(ensemble: Ensemble) -> None:
    """With no model yet, exports the model card's published checkpoint; offline, says how to build locally."""
    if ensemble.model_file.exists() or ensemble.tokenizer_file.exists():
        return
    if not hub_reachable():
        raise ServerError(
            f"no model in {relative_path(ensemble.repository)} yet, and the Hugging Face Hub (for {PUBLISHED_CHECKPOINT}) "
            f"is unreachable: build one from local files with `{OFFLINE_BUILD_COMMAND}`"
        )
    from ..build.pipeline import BuildOptions, build  # torch and transformers: only when a model is missing

    logger.info(
        "no model in %s yet: exporting %s from the Hub", relative_path(ensemble.repository), PUBLISHED_CHECKPOINT
    )
    build(BuildOptions(finetuned=PUBLISHED_CHECKPOINT, data=None, repository=ensemble.repository))


def main(argv: list[str] | None = None) -> int:
    return supervisor.main(argv, prepare=ensure_built)


if __name__ == "__main__":
    sys.exit(main())
