"""The project's scripts run as a user runs them (client/evaluate.py)."""

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
EVALUATE = [sys.executable, str(PROJECT / "client" / "evaluate.py")]


def evaluate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EVALUATE, *map(str, args)], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )
