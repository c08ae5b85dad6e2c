"""The Kubernetes manifests of deploy/k8s/ (those its kustomization.yaml lists)."""

from __future__ import annotations

import yaml

from tests.helpers.deploy_files import K8S

KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # oldest supported upstream release to the newest schemas


def k8s_documents() -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S / resource).read_text()):
            if document:
                documents.append((resource, document))
    return documents


def k8s_object(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in k8s_documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
