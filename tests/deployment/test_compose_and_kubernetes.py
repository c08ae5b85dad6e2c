"""Compose and Kubernetes run the same containers: one table of their facts (image, command, user,
privileges, mounts, environment, healthcheck), from the real Compose v2's merged model and from the
manifests, as each container gets them; they agree, and agree with the image where it decides."""

from __future__ import annotations

import json
import re
from pathlib import Path

from emotion_triton.serving.tritonserver_flags import DEVICE_VARIABLE
from tests.helpers.compose_yaml import OPERATOR_SECRET, compose_config, seconds
from tests.helpers.deploy_files import COMPOSE_FILE, CPU_COMPOSE_FILE, ROOT
from tests.helpers.dockerfiles import dockerfile_env, image_user
from tests.helpers.images import (
    SHARED_CONTAINERS,
    container_command,
    container_healthcheck_path,
    flags,
    image_repository,
    load_healthcheck,
)
from tests.helpers.kubernetes import k8s_object

# compose's only: a host folder has no place in a cluster.
# BUILD_CHECKPOINT_DIR and BUILD_DATA_DIR: a fine-tuned checkpoint and labelled data on the docker host.
COMPOSE_ONLY_MOUNTS = {"/checkpoint", "/data"}


# Facts the two differ in on purpose, and why.
BY_DESIGN = {
    ("build", "GPUs"): "compose reserves one for BUILD_MODE=finetune; the Job exports on the CPU, so the only "
    "GPU of a one-GPU cluster stays the server's (test_kubernetes_layout_rolls_out_on_a_cluster_with_one_gpu)",
    **dict.fromkeys(
        [
            ("build", f"environment {name}")
            for name in ("EMOTION_TRITON_SERVER", "EMOTION_TRITON_CLASSIFIER", "TRITON_ADMIN_KEY")
        ],
        "compose's build rolls its version out on the one tritonserver; behind a Service of several pods "
        "the model-control API reaches one of them, so the Job installs the version and pods serve it once "
        "restarted (docs/deploy.md, Kubernetes)",
    ),
}


# What docker-compose.cpu.yml changes (test_cpu_override_*): everything else is docker-compose.yml's.
CPU_HOST_CHANGES = {"GPUs", f"environment {DEVICE_VARIABLE}", "environment EMOTION_TRITON_CLASSIFIER"}
UNSET = "(unset)"
RUNTIME_DEFAULT = "(the runtime's default)"
IMAGES = "(the image's ENTRYPOINT and CMD)"


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity of bytes (1Gi, 512Mi, 2G)."""
    units = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    number, unit = re.fullmatch(r"(\d+)(|k|M|G|T|Ki|Mi|Gi)", str(quantity)).groups()
    return int(number) * units[unit]


def effective_environment(image_file: Path, given: dict[str, str | None]) -> dict[str, str]:
    """The image's ENV with a container's variables over it; empty means unset to both entrypoints."""
    environment = {**dockerfile_env(image_file), **{name: value for name, value in given.items() if value is not None}}
    return {name: value for name, value in environment.items() if value}


def capability_names(capabilities: list[str] | None) -> str:
    """Linux capabilities as both runtimes take them: NET_ADMIN or CAP_NET_ADMIN, any case."""
    return " ".join(sorted(name.upper().removeprefix("CAP_") for name in capabilities or []))


def healthcheck_facts(argv: list[str] | None) -> dict[str, str]:
    """The program of a healthcheck and what it checks; its timing is test_probes_outlast_...'s (it differs by design)."""
    if argv is None:
        return {"healthcheck program": UNSET, "healthcheck checks": UNSET}
    args = load_healthcheck().parse_args(argv[2:])
    return {
        "healthcheck program": " ".join(argv[:2]),
        "healthcheck checks": f"--health={args.health} --canaries={args.canaries} --url={args.url} --model={args.model}",
    }


def repository_fact(service: str, environment: dict[str, str], mounts: dict[str, str]) -> str:
    """Where the container's program finds the model repository, and how that path is mounted."""
    if service == "tritonserver":
        path = flags(container_command(environment)[1:])["--model-repository"]
    else:
        path = environment.get("MODEL_REPOSITORY", UNSET)
    return f"{path} {mounts.get(path, 'not mounted')}"


def compose_container_facts(service: str, settings: dict) -> dict[str, str]:
    """The container-level facts of a service of `docker compose config`'s model, as the container gets them."""
    image_file = SHARED_CONTAINERS[service][3]
    environment = effective_environment(image_file, settings.get("environment") or {})
    mounts = {
        volume["target"]: "read-only" if volume.get("read_only") else "writable"
        for volume in settings.get("volumes", [])
        if volume["target"] not in COMPOSE_ONLY_MOUNTS
    }
    options = settings.get("security_opt") or []
    seccomp = [
        option.partition("=")[2] or option.partition(":")[2] for option in options if option.startswith("seccomp")
    ]
    test = (settings.get("healthcheck") or {}).get("test")
    gpus = [
        device.get("count", len(device.get("device_ids", [])) or "all")
        for device in (((settings.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
        or []
        if "gpu" in device.get("capabilities", [])
    ]
    grace = settings.get("stop_grace_period")
    return {
        "image": settings["image"],
        "command": IMAGES
        if settings.get("entrypoint") is None and settings.get("command") is None
        else f"entrypoint {settings.get('entrypoint')} command {settings.get('command')}",
        "user": image_user(image_file, settings.get("user")),
        "no new privileges": str(any(o in ("no-new-privileges", "no-new-privileges:true") for o in options)),
        "capabilities dropped": capability_names(settings.get("cap_drop")),
        "capabilities added": capability_names(settings.get("cap_add")),
        "privileged": str(bool(settings.get("privileged"))),
        "read-only root filesystem": str(bool(settings.get("read_only"))),
        "seccomp profile": seccomp[0] if seccomp else RUNTIME_DEFAULT,
        "PID 1": "an init process" if settings.get("init") else "the image's ENTRYPOINT",
        **{f"mount {target}": access for target, access in mounts.items()},
        "model repository": repository_fact(service, environment, mounts),
        "/dev/shm bytes": str(settings["shm_size"]) if settings.get("shm_size") else RUNTIME_DEFAULT,
        **{f"environment {name}": value for name, value in environment.items()},
        **healthcheck_facts(test[1:] if test and test[0] == "CMD" else test),
        "seconds from SIGTERM to SIGKILL": f"{seconds(grace):g}" if grace else RUNTIME_DEFAULT,
        "GPUs": str(sum(gpus)) if all(isinstance(n, int) for n in gpus) else "all",
    }


def k8s_container_facts(service: str, pod: dict, container: dict) -> dict[str, str]:
    """The same facts of a Kubernetes container: its pod's securityContext under its own, volumes, probes."""
    image_file = SHARED_CONTAINERS[service][3]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    image_uid, _, image_gid = image_user(image_file).partition(":")
    variables = {}
    for variable in container.get("env", []):
        secret = variable.get("valueFrom", {}).get("secretKeyRef")
        if secret:
            optional = secret.get("optional") is True
            variables[variable["name"]] = OPERATOR_SECRET if optional else f"Secret {secret['name']} (required)"
        else:
            variables[variable["name"]] = (
                json.dumps(variable["valueFrom"]) if "valueFrom" in variable else variable.get("value", "")
            )
    environment = effective_environment(image_file, variables)
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts, shm = {}, RUNTIME_DEFAULT
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if mount["mountPath"] == "/dev/shm" and volume.get("emptyDir", {}).get("medium") == "Memory":
            shm = str(quantity_bytes(volume["emptyDir"].get("sizeLimit", "0")))
            continue
        read_only = mount.get("readOnly") or volume.get("persistentVolumeClaim", {}).get("readOnly")
        mounts[mount["mountPath"]] = "read-only" if read_only else "writable"
    capabilities = security.get("capabilities", {})
    seccomp = security.get("seccompProfile", {}).get("type")
    probes = [container.get(probe, {}).get("exec", {}).get("command") for probe in ("readinessProbe", "livenessProbe")]
    programs = {" ".join(argv[:2]) for argv in probes if argv}
    facts_of_checks = healthcheck_facts(probes[0])  # compose's healthcheck acts as the readiness probe
    if len(programs) > 1:
        facts_of_checks["healthcheck program"] = " | ".join(sorted(programs))
    grace = pod.get("terminationGracePeriodSeconds")
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if grace is not None and pre_stop:
        assert pre_stop[0] == "sleep", f"{service}: a preStop hook other than a sleep takes an unknown time"
        grace -= int(pre_stop[1])
    return {
        "image": container["image"],
        "command": IMAGES
        if "command" not in container and "args" not in container
        else f"entrypoint {container.get('command')} command {container.get('args')}",
        "user": f"{security.get('runAsUser', image_uid)}:{security.get('runAsGroup', image_gid)}",
        "no new privileges": str(security.get("allowPrivilegeEscalation") is False),
        "capabilities dropped": capability_names(capabilities.get("drop")),
        "capabilities added": capability_names(capabilities.get("add")),
        "privileged": str(bool(security.get("privileged"))),
        "read-only root filesystem": str(bool(security.get("readOnlyRootFilesystem"))),
        # The kubelet's default is Unconfined, docker's its default profile: only RuntimeDefault matches docker.
        "seccomp profile": {"RuntimeDefault": RUNTIME_DEFAULT, None: "unconfined"}.get(seccomp, seccomp),
        "PID 1": "the pause process" if pod.get("shareProcessNamespace") else "the image's ENTRYPOINT",
        **{f"mount {target}": access for target, access in mounts.items()},
        "model repository": repository_fact(service, environment, mounts),
        "/dev/shm bytes": shm,
        **{f"environment {name}": value for name, value in environment.items()},
        **facts_of_checks,
        "seconds from SIGTERM to SIGKILL": f"{grace:g}" if grace is not None else RUNTIME_DEFAULT,
        "GPUs": str(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)),
    }


def image_facts(service: str) -> dict[str, str]:
    """What the image itself says, where it says it: both files must give the container that."""
    image_file = SHARED_CONTAINERS[service][3]
    access = "read-only" if service == "tritonserver" else "writable"  # the server only reads it, the build fills it
    repository = f"{image_repository(service)} {access}"
    facts = {"command": IMAGES, "user": image_user(image_file), "model repository": repository}
    if service == "tritonserver":
        facts["healthcheck program"] = f"python3 {container_healthcheck_path()}"
    return facts


def test_compose_and_kubernetes_run_the_same_containers():
    """A table of the container-level facts of compose's `tritonserver` and `build` services (the merged
    model of the real Compose v2) and of the Deployment's and the Job's containers, as each container gets
    them (the image's value where a file sets none): they agree, and agree with the image where it decides."""
    models = {
        "docker-compose.yml": compose_config(COMPOSE_FILE),
        "docker-compose.yml + docker-compose.cpu.yml": compose_config(COMPOSE_FILE, CPU_COMPOSE_FILE),
    }
    problems, lines = [], []
    for service, (manifest, kind, name, image_file) in SHARED_CONTAINERS.items():
        pod = k8s_object(kind)["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == name]
        table = {where: compose_container_facts(service, model["services"][service]) for where, model in models.items()}
        table[manifest] = k8s_container_facts(service, pod, container)
        image = image_facts(service)
        gpu_file, cpu_files, k8s_file = table
        rows = sorted(set().union(*table.values()))
        assert set(image) <= set(rows), (
            f"{service}: facts of the image missing from the table: {set(image) - set(rows)}"
        )
        lines.append(f"{service} | {' | '.join(table)} | the image ({image_file.relative_to(ROOT)})")
        for row in rows:
            values = {where: facts.get(row, UNSET) for where, facts in table.items()}
            lines.append(f"{row} | {' | '.join(values.values())} | {image.get(row, '')}")
            if (service, row) in BY_DESIGN:
                assert values[gpu_file] != values[k8s_file], f"BY_DESIGN is stale: {service} {row} is the same now"
            elif values[gpu_file] != values[k8s_file]:
                problems.append(
                    f"{service} {row}: {gpu_file} gives {values[gpu_file]!r}, {k8s_file} gives {values[k8s_file]!r}"
                )
            if row not in CPU_HOST_CHANGES and values[cpu_files] != values[gpu_file]:
                problems.append(
                    f"{service} {row}: {cpu_files} gives {values[cpu_files]!r}, {gpu_file} gives {values[gpu_file]!r}"
                )
            for where, value in values.items():
                if row in image and value != image[row]:
                    problems.append(
                        f"{service} {row}: {where} gives {value!r}, {image_file.relative_to(ROOT)} says {image[row]!r}"
                    )
    print("\n".join(lines))
    assert not problems, "compose and Kubernetes disagree:\n  " + "\n  ".join(problems)
