"""The emotion-* commands (pyproject.toml's scripts): each runs its module's `main`.

`pip install emotion-triton` without extras is the client: `emotion-classify` runs. The other commands
need an extra; without it, they say which in one line (exit 1) instead of a ModuleNotFoundError.
`emotion-bench` and `emotion-soak` are the lab's (lab/pyproject.toml), not the package's.
"""

from __future__ import annotations

import importlib
import os
import sys


def _run(module: str, extra: str | None):
    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as error:
        if extra is None or (error.name or "").startswith("emotion_triton"):
            raise
        command = os.path.basename(sys.argv[0])
        sys.exit(
            f"{command} needs the '{extra}' extra ({error.name} is not installed): "
            f"pip install 'emotion-triton[{extra}]' (in a checkout: pip install -c requirements.lock '.[{extra}]')"
        )
    return main()


def classify():
    return _run("emotion_triton.client.classify", None)


def evaluate():
    return _run("emotion_triton.commands.evaluate", "evaluate")


def serve():
    return _run("emotion_triton.commands.serve", "serve")
