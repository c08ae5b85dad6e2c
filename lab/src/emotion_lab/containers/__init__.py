"""Containers on this machine: a Docker engine, Compose v2 and CPU stand-ins for NVIDIA's base images,
so that the project's own Dockerfiles and compose files run here as they are (`make containers`).

It imports nothing else of the package: it works with files (the checkout, the vendored sources)
and the docker command line.
"""

from .compose import ComposeProject
from .engine import EngineUnavailable, ensure_compose, ensure_engine, stop_engine
from .stand_ins import StandIn, ensure_stand_ins

__all__ = [
    "ComposeProject",
    "EngineUnavailable",
    "StandIn",
    "ensure_compose",
    "ensure_engine",
    "ensure_stand_ins",
    "stop_engine",
]
