"""The Kubernetes manifests, checked without a cluster: the Kubernetes schemas (offline, real
validators), the objects referring to each other, the model repository volume, probes and shutdown,
a roll-out on a cluster with one GPU, the autoscaling query against the scrape interval and the
batching window, the volume claim, kustomize and the documented apply commands."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import kubernetes_validate
import promql_parser
import pytest
import yaml

from emotion_triton.repository import Ensemble
from tests.helpers.deploy_files import BUILD_ENTRYPOINT, K8S, ROOT
from tests.helpers.images import container_command, flags, healthcheck_argv, image_repository, load_healthcheck
from tests.helpers.kubernetes import KUBERNETES_VERSIONS, k8s_documents, k8s_object

# The prometheus-community/prometheus chart scrapes annotated pods at server.global.scrape_interval,
# 1m unless changed (its values.yaml); podmonitor.yaml sets its own interval.
PROMETHEUS_CHART_SCRAPE_INTERVAL = "1m"


# -- Kubernetes -----------------------------------------------------------------------------------


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas():
    documents = k8s_documents()
    assert {d["kind"] for _, d in documents} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "Job",
    }
    for resource, document in documents:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{resource} ({document['kind']}) is invalid for Kubernetes {version}: {error}")
    # The validator is strict: a misspelt field fails.
    typo = json.loads(json.dumps(k8s_object("Deployment")))
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[-1], strict=True)


def test_kubernetes_objects_refer_to_each_other(deployment, triton_container):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod_labels
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    for service in (d for _, d in k8s_documents() if d["kind"] == "Service"):
        assert service["spec"]["selector"] == pod_labels
        ports = {p["name"] for p in triton_container["ports"]}
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    pdb = k8s_object("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == pod_labels
    hpa = k8s_object("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert pdb["spec"]["maxUnavailable"] == 1

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {i["name"] for i in kustomization["images"]}
    pod_specs = [deployment["spec"]["template"]["spec"], k8s_object("Job")["spec"]["template"]["spec"]]
    used = {
        c["image"].rpartition(":")[0] for spec in pod_specs for c in spec["containers"] + spec.get("initContainers", [])
    }
    assert used == images  # compose's: test_compose_and_kubernetes_run_the_same_containers


def test_kubernetes_model_repository_volume(deployment, triton_container):
    """The build Job fills the folder of the claim the server pods read, at the path each image uses (how
    each mounts it: test_compose_and_kubernetes_run_the_same_containers)."""
    claim = k8s_object("PersistentVolumeClaim")["metadata"]["name"]
    job = k8s_object("Job")["spec"]["template"]["spec"]
    pod = deployment["spec"]["template"]["spec"]

    def repository_mounts(spec, container):
        (volume,) = [v["name"] for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
        return [m for m in container["volumeMounts"] if m["name"] == volume]

    (serving_mount,) = repository_mounts(pod, triton_container)
    assert serving_mount["mountPath"] == image_repository("tritonserver")
    (build_container,) = job["containers"]
    (build_mount,) = repository_mounts(job, build_container)
    assert build_mount["mountPath"] == image_repository("build")
    assert build_mount["subPath"] == serving_mount["subPath"], "a subfolder: a volume's lost+found is no model"
    (wait,) = pod["initContainers"]
    assert repository_mounts(pod, wait)[0]["mountPath"] == serving_mount["mountPath"]


def test_kubernetes_probes_and_shutdown(deployment, triton_container):
    healthcheck = load_healthcheck()
    assert triton_container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for probe, health in (("readinessProbe", "ready"), ("livenessProbe", "live")):
        args = healthcheck.parse_args(healthcheck_argv(triton_container[probe]["exec"]["command"]))
        assert args.health == health
        assert triton_container[probe]["timeoutSeconds"] > args.timeout, (
            f"{probe}: the kubelet must wait for the answer"
        )
    assert triton_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = triton_container["lifecycle"]["preStop"]["exec"]["command"]
    exit_timeout = int(flags(container_command(triton_container.get("env"))[1:])["--exit-timeout-secs"])
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + exit_timeout
    # The kubelet refuses to start it as root (its uid: test_compose_and_kubernetes_run_the_same_containers).
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_kubernetes_layout_rolls_out_on_a_cluster_with_one_gpu(deployment, triton_container):
    """At the HPA's minimum, a rollout needs no GPU beyond the pods' own, and nothing else asks for one."""
    gpus_per_pod = int(triton_container["resources"]["limits"]["nvidia.com/gpu"])
    hpa = k8s_object("HorizontalPodAutoscaler")
    strategy = deployment["spec"]["strategy"]
    if strategy["type"] == "Recreate":
        surge = 0
    else:
        rolling = strategy["rollingUpdate"]
        surge, unavailable = rolling["maxSurge"], rolling["maxUnavailable"]
        assert isinstance(surge, int) and isinstance(unavailable, int), "absolute numbers: percentages round"
        assert unavailable >= 1, "without a spare GPU a rollout only progresses by stopping an old pod first"
    assert hpa["spec"]["minReplicas"] == 1, "one replica unless the operator raises it (docs/deploy.md)"
    assert (hpa["spec"]["minReplicas"] + surge) * gpus_per_pod <= 1, "a rollout at the minimum needs a spare GPU"
    # Nothing else holds a GPU: the init container, the build Job (export) run without.
    pod = deployment["spec"]["template"]["spec"]
    job = k8s_object("Job")["spec"]["template"]["spec"]
    for container in pod["initContainers"] + job["containers"]:
        assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {})), container["name"]
    # A drain may still evict the only pod (a minAvailable of 1 would block drains forever).
    pdb = k8s_object("PodDisruptionBudget")
    assert "minAvailable" not in pdb["spec"] and pdb["spec"]["maxUnavailable"] >= hpa["spec"]["minReplicas"]
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    for larger in ("maxSurge: 1", "maxUnavailable: 0", "minReplicas: 2"):
        assert larger in deploy_doc, f"docs/deploy.md must say what to change on larger clusters ({larger})"


def duration_seconds(text: str) -> float:
    """A Prometheus duration (1m, 30s, 1h30m, 500ms)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|[smhdwy])", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def promql_nodes(node):
    """Every node of a parsed PromQL expression."""
    yield node
    for attribute in ("lhs", "rhs", "expr"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from promql_nodes(child)
    for child in getattr(node, "args", None) or []:
        yield from promql_nodes(child)


def test_autoscaling_query_has_samples_and_counts_the_same_requests():
    (rule,) = adapter_rules()
    query = (
        rule["metricsQuery"].replace("<<.LabelMatchers>>", 'namespace="default",pod="p"').replace("<<.GroupBy>>", "pod")
    )
    expression = promql_parser.parse(query)
    # Samples: every range window holds 4 scrapes or more of the slowest interval the docs set up.
    monitor = yaml.safe_load((K8S / "podmonitor.yaml").read_text())
    intervals = {e["interval"] for e in monitor["spec"]["podMetricsEndpoints"]} | {PROMETHEUS_CHART_SCRAPE_INTERVAL}
    slowest = max(duration_seconds(i) for i in intervals)
    windows = [
        node.range.total_seconds()
        for node in promql_nodes(expression)
        if isinstance(node, promql_parser.MatrixSelector)
    ]
    assert windows and min(windows) >= 4 * slowest, f"windows {windows} s for a scrape interval of {slowest:g} s"
    # The same requests: queue time over successes (Triton adds a request's queue time only when it counts it
    # as a success), same window, same matchers, same grouping; only an idle 0/0 is guarded (clamp_min 1).
    assert isinstance(expression, promql_parser.BinaryExpr) and str(expression.op) == "/"
    numerator, denominator = expression.lhs, expression.rhs
    assert isinstance(denominator, promql_parser.Call) and denominator.func.name == "clamp_min"
    denominator, floor = denominator.args
    assert isinstance(floor, promql_parser.NumberLiteral) and floor.val == 1
    selectors = []
    for side in (numerator, denominator):
        (selector,) = [n for n in promql_nodes(side) if isinstance(n, promql_parser.MatrixSelector)]
        selectors.append(selector)
        assert str(side).replace(selector.vector_selector.name, "METRIC") == str(numerator).replace(
            selectors[0].vector_selector.name, "METRIC"
        ), f"numerator and denominator differ beyond the metric: {side} / {numerator}"
    assert [s.vector_selector.name for s in selectors] == [
        "nv_inference_queue_duration_us",
        "nv_inference_request_success",
    ]
    assert "1 +" not in rule["metricsQuery"].replace("(1+", "(1 +"), "no phantom request in the denominator"


def test_volume_claim_needs_a_storage_class_the_operator_chooses():
    """No class is guessed: the default class of most clusters has no ReadWriteMany and the claim would stay
    Pending without an error. The placeholder is not a valid class name, so the API server refuses the claim
    (`kubectl apply -k` fails, naming spec.storageClassName) until the operator writes a real one."""
    claim = k8s_object("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    storage_class = claim["spec"].get("storageClassName")
    assert storage_class, "an absent storageClassName silently takes the cluster's default class"
    dns_subdomain = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"  # ValidateClassName
    assert not re.fullmatch(dns_subdomain, storage_class) or len(storage_class) > 253, (
        f"{storage_class!r} is a valid class name: a cluster without it leaves the claim Pending, silently"
    )
    assert re.fullmatch(dns_subdomain, "nfs-client") and not re.fullmatch(dns_subdomain, "CHOOSE_ME")
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    assert storage_class in deploy_doc and "kubectl get storageclass" in deploy_doc


def test_every_documented_apply_replaces_the_build_job():
    """A Job's pod template is immutable: after `kustomize edit set image`, `kubectl apply -k` fails on the
    existing Job. Every apply the docs give to run deletes the Job first; the new one finds the model and exits."""
    job = k8s_object("Job")["metadata"]["name"]
    delete = f"kubectl delete job {job} --ignore-not-found && kubectl apply -k deploy/k8s"
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    commands = {
        "docs/deploy.md": "\n".join(re.findall(r"```(?:bash|sh)\n(.*?)```", deploy_doc, re.DOTALL)),
        "deploy/k8s/build-job.yaml": (K8S / "build-job.yaml").read_text(),
    }
    for name, text in commands.items():
        lines = [line for line in text.splitlines() if "kubectl apply -k deploy/k8s" in line]
        assert lines, f"{name} shows no apply"
        for line in lines:
            assert delete in line, f"{name}: `{line.strip()}` fails after an image change; use `{delete}`"
    assert f"kubectl wait --for=condition=complete job/{job}" in deploy_doc
    # Harmless to run again: the entrypoint skips a repository that has a model
    # (test_build_entrypoint_builds_only_a_repository_without_a_model).
    assert "nothing to do" in BUILD_ENTRYPOINT.read_text()


def test_kustomize_renders_the_manifests(tmp_path):
    """The real kustomize (kubectl's) builds deploy/k8s; skipped where kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert sorted(d["kind"] for d in documents) == sorted(d["kind"] for _, d in k8s_documents())
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)


def adapter_rules() -> list[dict]:
    return yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"]


def test_autoscaler_metric_is_served_by_prometheus_adapter():
    hpa = k8s_object("HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    names = {rule["name"]["as"] for rule in adapter_rules()}
    assert metric["pods"]["metric"]["name"] in names
    for rule in adapter_rules():
        query = rule["metricsQuery"].replace("<<.LabelMatchers>>", 'namespace="default",pod="p"')
        promql_parser.parse(query.replace("<<.GroupBy>>", "pod"))
        promql_parser.parse(rule["seriesQuery"])
        assert "nv_inference_queue_duration_us" in query and 'model="emotion_classifier"' in query
    monitor = yaml.safe_load((K8S / "podmonitor.yaml").read_text())
    deployment = k8s_object("Deployment")
    assert monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]


def test_autoscaling_target_sits_above_the_classifiers_batching_window():
    """Every request may wait one batching window for its batch; only waits beyond it mean a busy GPU."""
    ensemble = Ensemble.read()
    window_us = ensemble.config(ensemble.classifier).dynamic_batching.max_queue_delay_microseconds
    (metric,) = k8s_object("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert int(metric["pods"]["target"]["averageValue"]) >= 10 * window_us
