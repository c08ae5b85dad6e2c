"""The build command (build/build.py): the build's own command line (emotion_triton.build.command), then,
when a local server serves the repository it installed into, the checked roll-out of its new version
(without a server the build itself makes it the served one). The build and the serving layer never
import each other; this command composes them.
"""

from __future__ import annotations

import logging

from ..build.command import parse_build_arguments, run_build
from ..repository.versions import serving_server
from .rollout import RolloutOptions, run


def main(argv: list[str], description: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options, training = parse_build_arguments(argv, description)
    report = run_build(options, training)
    if report is None:
        return 2
    if serving_server(options.repository) is None:
        return 0
    return run(RolloutOptions(repository=options.repository, version=report["version"]))
