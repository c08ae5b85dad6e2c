"""The benchmark's container phase: the CPU-host deployment (docker-compose.yml + docker-compose.cpu.yml, our
Dockerfiles on the stand-in base images) against the local server (`make serve`'s code and classifier
config) on the same checkpoint, one text per request, the two measured in turns at each concurrency.

The deployment runs in a copy of the checkout's working tree; its build service exports the checkpoint
itself, as a user's does. Where no container engine can be had, the phase is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import time
from pathlib import Path

from emotion_lab.containers import EngineUnavailable, ensure_compose, ensure_engine, ensure_stand_ins
from emotion_lab.containers.compose import ComposeError
from emotion_lab.containers.cpu_host import PORTS, CpuHostDeployment, working_tree_copy
from emotion_lab.containers.stand_ins import StandInError
from emotion_triton.repository import PROJECT_ROOT
from emotion_triton.serving.local_server import LocalServer
from emotion_triton.serving.preflight import free_ports

from .bench_phases import BenchOptions, ensemble_sender, measure, serve_repository

logger = logging.getLogger(__name__)
CONTAINER_CLIENTS = (1, 16)


def compare_container(checkpoint: Path, repository: Path, texts: list[str], options: BenchOptions) -> dict:
    """{"up_seconds", "points"} (systems "local" and "container"), or {"skipped": why}."""
    try:
        ensure_engine(progress=logger.info)
        ensure_compose(progress=logger.info)
        ensure_stand_ins(progress=logger.info)
    except (EngineUnavailable, StandInError) as error:
        logger.warning("container phase skipped: %s", error)
        return {"skipped": str(error)}
    checkout = (options.results / "container-checkout").resolve()  # compose runs in it: no relative path
    shutil.rmtree(checkout, ignore_errors=True)
    working_tree_copy(PROJECT_ROOT, checkout)
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    deployment = CpuHostDeployment(
        checkout, checkpoint.resolve(), f"emotion-triton-bench-{secrets.token_hex(3)}", ports
    )
    local = serve_repository(repository, options.results)
    try:
        logger.info("container phase: `docker compose up -d tritonserver` (CPU host) in %s", checkout)
        started = time.monotonic()
        deployment.up()
        up_seconds = time.monotonic() - started
        return {"up_seconds": up_seconds, "points": against_local(deployment, local, texts, options.seconds)}
    except ComposeError as error:
        logger.warning("container phase failed: %s", error)
        return {"failed": str(error)}
    finally:
        local.stop()
        deployment.compose.down()


def against_local(deployment: CpuHostDeployment, local: LocalServer, texts: list[str], seconds: float) -> list[dict]:
    """One text per request at each of CONTAINER_CLIENTS, the local server then the container's."""
    senders = {"local": ensemble_sender(local), "container": ensemble_sender(local, deployment.grpc_url)}
    points = []
    for clients in CONTAINER_CLIENTS:
        for system, sender in senders.items():
            logger.info("container phase: %s, %d client(s)", system, clients)
            result = asyncio.run(measure(sender, texts, clients, 1, seconds))
            points.append({"system": system, **result.as_dict()})
    return points


def container_summary(phase: dict) -> dict:
    """Container / local, texts/s and p50, at each concurrency (the issue's bound: within 10%)."""
    points = {(p["system"], p["concurrency"]): p for p in phase.get("points", [])}
    summary = {}
    for clients in CONTAINER_CLIENTS:
        local, container = points.get(("local", clients)), points.get(("container", clients))
        if local and container and local["texts_per_second"]:
            summary[f"container_vs_local_c{clients}_texts_per_second"] = (
                container["texts_per_second"] / local["texts_per_second"]
            )
            summary[f"container_vs_local_c{clients}_p50"] = container["p50_ms"] / local["p50_ms"]
    return summary


def container_table(phase: dict) -> str:
    if not phase:
        return ""
    if "points" not in phase:
        return f"container phase: {phase.get('skipped') or phase.get('failed') or 'not run'}"
    lines = [
        f"CPU-host deployment healthy {phase['up_seconds']:.0f} s after `docker compose build` + `up -d` began.",
        "",
        "| server (same checkpoint, classifier config) | clients | texts/s | p50 ms | p95 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in phase["points"]:
        lines.append(
            f"| {p['system']} | {p['concurrency']} | {p['texts_per_second']:.1f} | {p['p50_ms']:.2f} | "
            f"{p['p95_ms']:.2f} | {p['errors']} |"
        )
    return "\n".join(lines)
