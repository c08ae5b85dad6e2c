"""The roll-out command: makes a built version the served one on the local server serving a repository,
after checking it through that server; or rolls back to the version before.

    python -m emotion_triton.commands.rollout                 # the newest version above the served one
    python -m emotion_triton.commands.rollout --version 7
    python -m emotion_triton.commands.rollout --rollback      # `make rollback`

A build run against a repository that a local server serves ends with this roll-out of its version
(build/build.py: emotion_triton.commands.build). Exit codes: 0 done; 1 refused or failed, in one line, with
the served version unchanged; 2 bad options or a failed build.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from ..command_line import parse
from ..repository import DEFAULT_REPOSITORY


@dataclass
class RolloutOptions:
    """Roll a built version out on the local server serving the repository, or roll back."""

    repository: Path = DEFAULT_REPOSITORY
    """the model repository the local server serves"""
    version: int | None = None
    """the version to roll out (default: the newest above the served one)"""
    rollback: bool = False
    """serve the version before the served one again"""


def run(options: RolloutOptions) -> int:
    # Here, not at the top: build/build.py imports this module in the build image, which has the build's
    # packages and not the server's (psutil, the Triton wheel).
    from ..serving.rollout import RolloutError, roll_back, roll_out

    try:
        if options.rollback:
            roll_back(options.repository)
        else:
            roll_out(options.repository, options.version)
    except RolloutError as error:
        print(f"{'rollback' if options.rollback else 'roll-out'} refused: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(parse(RolloutOptions, argv, __doc__))


if __name__ == "__main__":
    sys.exit(main())
