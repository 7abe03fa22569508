"""A serving replica's pod from an InferencePool's template: the user's parts, then the
operator's (which always win), the engine's flags for the slice, probes and /dev/shm.

Pure, like ``manifests``: the handler places, this builds, the adapter creates.
"""

from __future__ import annotations

from typing import Any

from gpucost import names
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.serving import Engine, Probe
from gpucost.core.engine import Slice, engine_args

DRAIN_SECONDS = 5
"""preStop sleep: the pod stays serving while its endpoint leaves every gateway's list, so a
request routed to it just before its deletion is still answered."""
SHM = "dshm"
OPERATOR_LABELS = (
    names.LABEL_MANAGED_BY,
    names.LABEL_OWNER_UID,
    names.LABEL_REPLICA,
    names.LABEL_POOL,
    names.LABEL_REVISION,
)
OPERATOR_ANNOTATIONS = (
    names.ANNOTATION_OWNER,
    names.ANNOTATION_NODE,
    names.ANNOTATION_GPU_INDICES,
    names.ANNOTATION_GPU_UUIDS,
    names.ANNOTATION_GPU_MEMORY,
)
OPERATOR_ENV = (
    *names.ENV_VISIBLE_DEVICES,
    names.ENV_GPU_MEMORY_MIB,
    names.ENV_GPU_MEMORY_FRACTION,
    "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
)
GPU_RESOURCES = (names.RESOURCE_GPU, names.RESOURCE_GPU_MEMORY)
PROBE_DEFAULTS = {
    # Model load: 180 x 10 s = 30 minutes before the kubelet gives up on a starting server.
    "startup": {"periodSeconds": 10, "failureThreshold": 180, "timeoutSeconds": 5},
    "readiness": {"periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 5},
    "liveness": {"periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 10},
}


def template_conflict(spec: InferencePoolSpec) -> str | None:
    """The field path of the first template setting that would override the operator's own, and
    why; None if the template only adds."""
    meta, pod = spec.template.metadata, spec.template.spec
    for key in meta.labels:
        if key in OPERATOR_LABELS:
            return f'spec.template.metadata.labels["{key}"]: set by the operator'
    for key in meta.annotations:
        if key in OPERATOR_ANNOTATIONS:
            return f'spec.template.metadata.annotations["{key}"]: set by the operator'
    for i, env in enumerate(spec.env):
        if env.name in OPERATOR_ENV or (env.name == "MODEL_URI" and spec.model_uri):
            return f"spec.env[{i}].name: {env.name} is set by the operator from the placement"
    for i, container in enumerate(pod.sidecars):
        if container.get("name") == "server":
            return f"spec.template.spec.sidecars[{i}].name: 'server' is the serving container"
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            for key in resources.get(part) or {}:
                if key in GPU_RESOURCES:
                    return (
                        f"spec.template.spec.sidecars[{i}].resources.{part}.{key}: the replica's "
                        "GPUs belong to its serving container"
                    )
    for i, volume in enumerate(pod.volumes):
        if volume.get("name") == SHM and _wants_shm(spec):
            return f"spec.template.spec.volumes[{i}].name: '{SHM}' is the operator's /dev/shm"
    return None


def _wants_shm(spec: InferencePoolSpec) -> bool:
    """vLLM and SGLang need a large /dev/shm (tensor parallel, the API server's IPC); Docker's
    64 MiB default is not enough. A template that mounts its own keeps it."""
    if spec.engine not in (Engine.VLLM.value, Engine.SGLANG.value):
        return False
    return not any(m.get("mountPath") == "/dev/shm" for m in spec.template.spec.volume_mounts)


def probe(spec: InferencePoolSpec, kind: str) -> dict[str, Any] | None:
    """The engine's default probe of ``kind`` with the user's fields over it."""
    port = spec.serving_port
    if spec.engine == Engine.CUSTOM.value:
        handler: dict[str, Any] | None = {"tcpSocket": {"port": port}}
    else:
        handler = {"httpGet": {"path": "/health", "port": port}}
    override: Probe | None = getattr(spec.probes, kind)
    timing = dict(PROBE_DEFAULTS[kind])
    if override is not None:
        given = override.wire()
        for key in ("httpGet", "tcpSocket"):
            if key in given:
                handler = {key: {"port": port, **given.pop(key)}}
        if "exec" in given:
            handler = {"exec": given.pop("exec")}
        timing.update(given)
    return {**handler, **timing} if handler else None


def serving_container(spec: InferencePoolSpec, got: Slice, served_name: str) -> dict[str, Any]:
    """The serving container: the user's image, args and env, the engine's flags for ``got``,
    probes, and the drain before it stops."""
    env: list[dict[str, Any]] = [e.wire() for e in spec.env]
    if spec.model_uri:
        env.append({"name": "MODEL_URI", "value": spec.model_uri})
    env += [
        {"name": names.ENV_GPU_MEMORY_MIB, "value": str(got.mib_per_gpu)},
        {"name": names.ENV_GPU_MEMORY_FRACTION, "value": f"{got.fraction:g}"},
    ]
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if spec.resources.cpu:
        requests["cpu"] = spec.resources.cpu
    if spec.resources.memory:
        requests["memory"] = limits["memory"] = spec.resources.memory
    port = spec.serving_port
    extra = engine_args(spec.engine, spec.args, got, port, spec.model_memory_mib, served_name)
    args = [*spec.args, *extra]
    template = spec.template.spec
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.image,
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "ports": [{"name": "http", "containerPort": port}],
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
    }
    for kind in ("startup", "readiness", "liveness"):
        container[f"{kind}Probe"] = probe(spec, kind)
    if spec.command:
        container["command"] = spec.command
    if args:
        container["args"] = args
    if template.env_from:
        container["envFrom"] = template.env_from
    mounts = list(template.volume_mounts)
    if _wants_shm(spec):
        mounts.append({"name": SHM, "mountPath": "/dev/shm"})
    if mounts:
        container["volumeMounts"] = mounts
    if template.container_security_context:
        container["securityContext"] = template.container_security_context
    return container


def apply_template(pod: dict[str, Any], spec: InferencePoolSpec) -> dict[str, Any]:
    """The template's pod-level parts added to a built replica pod; the operator's keys win."""
    meta, template = pod["metadata"], spec.template
    meta["labels"] = {**template.metadata.labels, **meta["labels"]}
    meta["annotations"] = {**template.metadata.annotations, **meta["annotations"]}
    body, extra = pod["spec"], template.spec
    body["containers"] += extra.sidecars
    if extra.init_containers:
        body["initContainers"] = extra.init_containers
    volumes = list(extra.volumes)
    if _wants_shm(spec):
        volumes.append({"name": SHM, "emptyDir": {"medium": "Memory"}})
    if volumes:
        body["volumes"] = volumes
    body["tolerations"] = [*body.get("tolerations", []), *extra.tolerations]
    if extra.node_selector:
        body["nodeSelector"] = extra.node_selector
    if extra.service_account_name:
        body["serviceAccountName"] = extra.service_account_name
        body["automountServiceAccountToken"] = True  # a named account is asked for to be used
    optional = {
        "imagePullSecrets": extra.image_pull_secrets,
        "securityContext": extra.security_context,
        "priorityClassName": extra.priority_class_name,
        "terminationGracePeriodSeconds": extra.termination_grace_period_seconds,
    }
    body.update({k: v for k, v in optional.items() if v not in (None, [])})
    return pod
