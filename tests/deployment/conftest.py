"""Fixtures of the deployment tests: docker-compose.yml, its CPU-host merge and the Kubernetes Deployment."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers.compose_yaml import interpolate, load_compose, merge_compose
from tests.helpers.deploy_files import COMPOSE_FILE, CPU_COMPOSE_FILE
from tests.helpers.kubernetes import k8s_object


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def serving(compose) -> dict:
    return interpolate(compose["services"]["tritonserver"])


@pytest.fixture(scope="module")
def deployment() -> dict:
    return k8s_object("Deployment", "emotion-triton")


@pytest.fixture(scope="module")
def triton_container(deployment) -> dict:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "tritonserver"]
    return container


@pytest.fixture(scope="module")
def cpu_compose(compose) -> dict:
    """docker compose -f docker-compose.yml -f docker-compose.cpu.yml, merged."""
    return merge_compose(compose, load_compose(CPU_COMPOSE_FILE))
