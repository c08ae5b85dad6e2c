"""`make containers`: a Docker engine, Compose v2 and the stand-in base images, each only when missing.

    python -m emotion_lab.containers            # engine, compose, stand-ins (seconds when all are there)
    python -m emotion_lab.containers --stop     # stop the dockerd that this started (make containers-stop)

Exit 1 with one line saying why when this machine cannot run an engine.
"""

from __future__ import annotations

import argparse
import sys
import time

from .engine import EngineUnavailable, ensure_compose, ensure_engine, stop_engine
from .stand_ins import StandInError, ensure_stand_ins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop", action="store_true", help="stop the dockerd this command started, and exit")
    args = parser.parse_args(argv)
    if args.stop:
        print("stopped dockerd" if stop_engine() else "no dockerd started by `make containers` is running")
        return 0
    started = time.monotonic()
    try:
        print(f"engine: {ensure_engine()}")
        print(f"docker compose: {ensure_compose()}")
        for name, state in ensure_stand_ins().items():
            print(f"stand-in {name}: {state}")
    except (EngineUnavailable, StandInError) as error:
        print(f"containers: {error}", file=sys.stderr)
        return 1
    print(f"containers ready in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
