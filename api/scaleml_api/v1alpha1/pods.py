"""Pod-level settings that several kinds share: scheduling and environment variables."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field, StringConstraints
from pydantic.config import JsonDict

from scaleml_api.base import ApiModel, OptionalDnsLabel, OptionalObjectName, Rule

# The extended resource NVIDIA's device plugin advertises, and the taint key of GPU node pools.
GPU_RESOURCE = "nvidia.com/gpu"
# Tolerates that taint, for pods that request GPUs.
GPU_TOLERATION: Final = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

# Kubernetes' own rules for label values and for label and annotation keys (qualified names).
LabelValue = Annotated[str, StringConstraints(pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", max_length=63)]
_QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LabelKey = Annotated[str, StringConstraints(pattern=_QUALIFIED_NAME, min_length=1, max_length=317)]
# Map keys have no schema of their own in a CRD: the API server checks them with this rule.
_KEYS_ARE_QUALIFIED_NAMES: JsonDict = {
    "x-kubernetes-validations": [
        {
            "rule": f"self.all(k, k.matches(r'{_QUALIFIED_NAME}') && size(k) <= 317)",
            "message": "keys must be label keys",
        }
    ]
}


class Toleration(ApiModel):
    """Lets the pods schedule onto nodes with a matching taint (the core/v1 Toleration)."""

    key: Annotated[str, StringConstraints(pattern=f"^$|{_QUALIFIED_NAME}", max_length=317)] = Field(
        default="", description="Taint key; empty with operator Exists matches every taint."
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: LabelValue = Field(default="", description="Taint value to match when operator is Equal.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="", description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="For NoExecute: how long the pod stays bound after the taint appears."
    )

    rules = (
        Rule(
            cel="self.operator != 'Exists' || self.value == ''",
            message="value must be empty when operator is Exists",
            check=lambda t: t.operator != "Exists" or t.value == "",
            field_path=".value",
        ),
        # The Pod API's own rules for a toleration, so that the error names this field, not the Job's.
        Rule(
            cel="self.key != '' || self.operator == 'Exists'",
            message="operator must be Exists when key is empty",
            check=lambda t: t.key != "" or t.operator == "Exists",
            field_path=".operator",
        ),
        Rule(
            cel="!has(self.tolerationSeconds) || self.effect == 'NoExecute'",
            message="tolerationSeconds is for effect NoExecute only",
            check=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
            field_path=".tolerationSeconds",
        ),
    )


_RESERVED_LABEL_PREFIXES = ("app.kubernetes.io/", "scaleml.dev/")


class PodMetadata(ApiModel):
    """Extra labels and annotations for the pods (service mesh, cost allocation, log routing...)."""

    labels: dict[LabelKey, LabelValue] = Field(
        default={},
        max_length=64,
        description="Labels added to the pods; app.kubernetes.io/ and scaleml.dev/ are ours.",
        json_schema_extra=_KEYS_ARE_QUALIFIED_NAMES,
    )
    annotations: dict[LabelKey, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default={},
        max_length=64,
        description="Annotations added to the pods.",
        json_schema_extra=_KEYS_ARE_QUALIFIED_NAMES,
    )

    rules = (
        Rule(
            cel="!self.labels.exists(k, " + " || ".join(f"k.startsWith('{p}')" for p in _RESERVED_LABEL_PREFIXES) + ")",
            message="labels under app.kubernetes.io/ and scaleml.dev/ are set by ScaleML",
            check=lambda m: not any(k.startswith(_RESERVED_LABEL_PREFIXES) for k in m.labels),
            field_path=".labels",
        ),
    )


class Scheduling(ApiModel):
    """Where the pods may run and in which queue they wait."""

    node_selector: dict[LabelKey, LabelValue] = Field(
        default={},
        max_length=64,
        description="Node labels the pods require.",
        json_schema_extra=_KEYS_ARE_QUALIFIED_NAMES,
    )
    tolerations: list[Toleration] = Field(default=[], max_length=64, description="Tolerations added to the pods.")
    priority_class_name: OptionalObjectName = Field(default="", description="PriorityClass of the pods.")
    queue_name: OptionalDnsLabel = Field(
        default="",
        description="Kueue LocalQueue to submit the workload to (sets the kueue.x-k8s.io/queue-name label).",
    )


# Environment of the torchrun agent. By default torchrun shares its rendezvous store with the
# workers, and a restarted group then reads the previous group's gloo/NCCL addresses from it and
# fails to connect (pytorch/pytorch#135712); with sharing off, rank 0 of each group hosts a new store.
TORCHRUN_ENV: Final = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}

# Names the operator sets itself for torch.distributed and its own wiring; a user value would
# silently break rendezvous (or restarts).
RESERVED_ENV_NAMES = (
    *TORCHRUN_ENV,
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_RDZV_ENDPOINT",
    "PET_RDZV_BACKEND",
    "PET_RDZV_ID",
    "PET_MAX_RESTARTS",
    "TORCHELASTIC_RESTART_COUNT",
    "SCALEML_CONFIG",
)
_RESERVED_CEL = "[" + ", ".join(f"'{name}'" for name in RESERVED_ENV_NAMES) + "]"


class EnvVar(ApiModel):
    """An environment variable for the workload container."""

    name: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=256)] = Field(
        description="Variable name."
    )
    value: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="Literal value. Use valueFrom for anything secret."
    )
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="A core/v1 EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).",
    )

    rules = (
        Rule(
            cel=f"!(self.name in {_RESERVED_CEL})",
            message="is reserved: ScaleML sets it for torch.distributed",
            check=lambda e: e.name not in RESERVED_ENV_NAMES,
            field_path=".name",
        ),
        Rule(
            cel="!has(self.valueFrom) || self.value == ''",
            message="set value or valueFrom, not both",
            check=lambda e: e.value_from is None or e.value == "",
        ),
    )


EnvList = Annotated[
    list[EnvVar],
    Field(
        default=[],
        max_length=128,
        description="Extra environment variables for the workload container. One named PYTHONUNBUFFERED, HOME or "
        "TORCHINDUCTOR_CACHE_DIR replaces the operator's default; the names torch.distributed needs are reserved.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ),
]
