"""Pod-level settings that several kinds share: scheduling and environment variables."""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal, TypeVar

from pydantic import AfterValidator, Field, StringConstraints
from pydantic.config import JsonDict

from scaleml_api.base import (
    ApiModel,
    DnsLabel,
    ListType,
    ObjectName,
    OptionalDnsLabel,
    OptionalObjectName,
    Rule,
)

# The extended resource NVIDIA's device plugin advertises, and the taint key of GPU node pools.
GPU_RESOURCE = "nvidia.com/gpu"
# Tolerates that taint, for pods that request GPUs.
GPU_TOLERATION: Final = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

# Kubernetes' own rule for label values: at most 63 characters, alphanumerics at both ends.
LabelValue = Annotated[str, StringConstraints(pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", max_length=63)]

# Kubernetes' rule for label and annotation keys (qualified names, IsQualifiedName in
# k8s.io/apimachinery): an optional prefix, a DNS-1123 subdomain of at most 253 characters, and "/";
# then a name of at most 63 characters. The pattern bounds the name; no pattern can bound the
# prefix (a subdomain of any shape), so a second one finds a prefix that is too long.
_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX_PART = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_QUALIFIED_NAME_BODY = f"({_PREFIX_PART}/)?{_NAME_PART}"
_QUALIFIED_NAME = f"^{_QUALIFIED_NAME_BODY}$"
_LONG_PREFIX = r"^[^/]{254,}/"
QUALIFIED_NAME_RULE: Final = (
    "a qualified name: an optional DNS subdomain prefix of at most 253 characters and '/', then a name of "
    "at most 63 characters (alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)"
)


def is_qualified_name(key: str) -> bool:
    """Whether `key` is a label or annotation key the API server accepts."""
    return re.fullmatch(_QUALIFIED_NAME, key) is not None and re.match(_LONG_PREFIX, key) is None


def _qualified_name_cel(var: str) -> str:
    return f"{var}.matches(r'{_QUALIFIED_NAME}') && !{var}.matches(r'{_LONG_PREFIX}')"


_V = TypeVar("_V")


def _keys_are_qualified_names(mapping: dict[str, _V]) -> dict[str, _V]:
    wrong = [key for key in mapping if not is_qualified_name(key)]
    if wrong:
        raise ValueError(f"key {wrong[0]!r} is not {QUALIFIED_NAME_RULE}")
    return mapping


def _qualified_name_or_empty(key: str) -> str:
    if key and not is_qualified_name(key):
        raise ValueError(f"must be {QUALIFIED_NAME_RULE}")
    return key


# A single key (not a map's): its pattern bounds the name part, this rule the prefix.
_PREFIX_FITS: JsonDict = {
    "x-kubernetes-validations": [
        {"rule": f"!self.matches(r'{_LONG_PREFIX}')", "message": "the prefix before '/' must be at most 253 characters"}
    ]
}
# 253 for the prefix, 1 for "/", 63 for the name.
_QUALIFIED_NAME_MAX: Final = 317
# A label key (a taint's, a selector's), or empty where it is optional.
QualifiedName = Annotated[
    str,
    StringConstraints(pattern=_QUALIFIED_NAME, max_length=_QUALIFIED_NAME_MAX),
    AfterValidator(_qualified_name_or_empty),
    Field(json_schema_extra=_PREFIX_FITS),
]
OptionalQualifiedName = Annotated[
    str,
    StringConstraints(pattern=f"^$|{_QUALIFIED_NAME}", max_length=_QUALIFIED_NAME_MAX),
    AfterValidator(_qualified_name_or_empty),
    Field(json_schema_extra=_PREFIX_FITS),
]


# Map keys have no schema of their own in a CRD: the API server checks them with this rule, the
# models with the validator, so that both name the map.
_KEY_RULE: JsonDict = {
    "rule": f"self.all(k, {_qualified_name_cel('k')})",
    "message": f"every key must be {QUALIFIED_NAME_RULE}",
}
_KEYS_ARE_QUALIFIED_NAMES: JsonDict = {"x-kubernetes-validations": [_KEY_RULE]}
# Labels (node labels, pod labels): qualified names to label values.
LabelMap = Annotated[dict[str, LabelValue], AfterValidator(_keys_are_qualified_names)]

# Kubernetes refuses an object whose annotations, keys and values together, take more than 256 KiB
# of UTF-8 (ValidateAnnotationsSize). The pods carry ScaleML's own annotations beside the user's, and
# the Job controller and mutating webhooks (a service mesh's sidecar injector) add theirs: the user's
# may take all but 16 KiB of it, which leaves ScaleML's (under 200 bytes) and theirs room to spare.
# Bytes, not characters: the API server counts bytes, and a character takes up to four.
ANNOTATIONS_MAX_BYTES: Final = 256 * 1024 - 16 * 1024


def _annotations_fit(annotations: dict[str, str]) -> dict[str, str]:
    size = sum(len(key.encode()) + len(value.encode()) for key, value in annotations.items())
    if size > ANNOTATIONS_MAX_BYTES:
        raise ValueError(f"keys and values take {size} bytes of UTF-8, more than {ANNOTATIONS_MAX_BYTES}")
    return annotations


_ANNOTATIONS_RULES: JsonDict = {
    "x-kubernetes-validations": [
        _KEY_RULE,
        {
            "rule": f"self.map(k, size(k) + size(bytes(self[k]))).sum() <= {ANNOTATIONS_MAX_BYTES}",
            "message": f"keys and values together must take at most {ANNOTATIONS_MAX_BYTES} bytes of UTF-8",
        },
    ]
}
Annotations = Annotated[
    dict[str, Annotated[str, StringConstraints(max_length=4096)]],
    AfterValidator(_keys_are_qualified_names),
    AfterValidator(_annotations_fit),
]


_SET_OPERATORS: Final = ("In", "NotIn")


class LabelSelectorRequirement(ApiModel):
    """A requirement on one label (the meta/v1 LabelSelectorRequirement)."""

    key: QualifiedName = Field(
        description="The label key: an optional DNS subdomain prefix and '/', then a name of at most 63 characters."
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In or NotIn (the label's value is, or is not, one of values), Exists or DoesNotExist."
    )
    values: list[LabelValue] = Field(
        default=[],
        max_length=64,
        description="Label values (as in matchLabels): at least one with operator In or NotIn, none with Exists or "
        "DoesNotExist.",
    )

    # Kubernetes' own rules (ValidateLabelSelectorRequirement), so that a selector the consumer would
    # refuse (or, where it does not check, fail to parse) is refused here, naming this field.
    rules = (
        Rule(
            cel="(self.operator in ['In', 'NotIn']) == (size(self.values) > 0)",
            message="values must name at least one value with operator In or NotIn, and none with Exists or "
            "DoesNotExist",
            check=lambda r: (r.operator in _SET_OPERATORS) == bool(r.values),
            field_path=".values",
        ),
    )


class LabelSelector(ApiModel):
    """Labels to match (the meta/v1 LabelSelector): every one of matchLabels and of matchExpressions; empty: all."""

    match_labels: LabelMap = Field(
        default={},
        max_length=64,
        description="Labels that must have exactly these values (at most 63 characters: alphanumerics, '-', '_' and "
        "'.', starting and ending with an alphanumeric; or empty). At most 64.",
        json_schema_extra=_KEYS_ARE_QUALIFIED_NAMES,
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default=[], max_length=16, description="Requirements on labels, all of which must hold."
    )


class Toleration(ApiModel):
    """Lets the pods schedule onto nodes with a matching taint (the core/v1 Toleration)."""

    key: OptionalQualifiedName = Field(
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

    labels: LabelMap = Field(
        default={},
        max_length=64,
        description="Labels added to the pods; app.kubernetes.io/ and scaleml.dev/ are ours.",
        json_schema_extra=_KEYS_ARE_QUALIFIED_NAMES,
    )
    annotations: Annotations = Field(
        default={},
        max_length=64,
        description="Annotations added to the pods.",
        json_schema_extra=_ANNOTATIONS_RULES,
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

    node_selector: LabelMap = Field(
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


# A key of a ConfigMap or Secret (IsConfigMapKey): at most 253 of [-._a-zA-Z0-9], neither "." nor
# starting with "..".
ConfigMapKey = Annotated[str, StringConstraints(pattern=r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$", max_length=253)]


class SecretKeySelector(ApiModel):
    """A key of a Secret in the job's namespace (the core/v1 SecretKeySelector)."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: ConfigMapKey = Field(description="Key in the Secret.")
    optional: bool | None = Field(default=None, description="Whether the Secret or its key may be missing.")


class ConfigMapKeySelector(ApiModel):
    """A key of a ConfigMap in the job's namespace (the core/v1 ConfigMapKeySelector)."""

    name: ObjectName = Field(description="Name of the ConfigMap.")
    key: ConfigMapKey = Field(description="Key in the ConfigMap.")
    optional: bool | None = Field(default=None, description="Whether the ConfigMap or its key may be missing.")


# The pod's fields a variable may hold (the Pod API's list), or one label or annotation.
_POD_FIELDS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
_POD_FIELD_PATH = (
    "^("
    + "|".join(re.escape(path) for path in _POD_FIELDS)
    + rf"|metadata\.(labels|annotations)\['{_QUALIFIED_NAME_BODY}'\])$"
)
_SUBSCRIPT_LONG_PREFIX = r"\['[^/']{254,}/"


def _subscript_prefix_fits(path: str) -> str:
    if re.search(_SUBSCRIPT_LONG_PREFIX, path):
        raise ValueError("the prefix of the label or annotation key must be at most 253 characters")
    return path


class ObjectFieldSelector(ApiModel):
    """A field of the pod (the core/v1 ObjectFieldSelector)."""

    field_path: Annotated[
        str,
        StringConstraints(pattern=_POD_FIELD_PATH, max_length=350),
        AfterValidator(_subscript_prefix_fits),
        Field(
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": f'!self.matches(r"{_SUBSCRIPT_LONG_PREFIX}")',
                        "message": "the prefix of the label or annotation key must be at most 253 characters",
                    }
                ]
            }
        ),
    ] = Field(
        description="One of " + ", ".join(_POD_FIELDS) + ", metadata.labels['<key>'] or metadata.annotations['<key>']."
    )
    api_version: Literal["v1"] | None = Field(
        default=None, description="Version of the schema fieldPath is written in; the API server's default is v1."
    )


# The divisors the Pod API takes: 1m and 1 for cpu; the others, and 1, for memory, ephemeral
# storage and hugepages. Written as strings (an enum, so that the rule's cost stays bounded).
Divisor = Literal["1m", "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei"]


def _divisor_fits(ref: ResourceFieldSelector) -> bool:
    if ref.divisor is None:
        return True
    return ref.divisor in ("1m", "1") if ref.resource.endswith(".cpu") else ref.divisor != "1m"


class ResourceFieldSelector(ApiModel):
    """A resource request or limit of a container (the core/v1 ResourceFieldSelector)."""

    resource: Annotated[
        str,
        StringConstraints(pattern=r"^(limits|requests)\.(cpu|memory|ephemeral-storage|hugepages-.+)$", max_length=128),
    ] = Field(description="limits.cpu, requests.memory, limits.ephemeral-storage, requests.hugepages-2Mi, ...")
    container_name: DnsLabel | None = Field(default=None, description="The container; by default, this one.")
    divisor: Divisor | None = Field(
        default=None, description="The value's unit: 1m or 1 for cpu; 1, 1Ki, 1Mi, ... else."
    )

    rules = (
        Rule(
            cel="!has(self.divisor) || "
            "(self.resource.endsWith('.cpu') ? self.divisor in ['1m', '1'] : self.divisor != '1m')",
            message="must be 1m or 1 for cpu; 1m is for cpu only",
            check=_divisor_fits,
            field_path=".divisor",
        ),
    )


_SOURCES = ("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef")


class EnvVarSource(ApiModel):
    """Where a variable's value comes from (the core/v1 EnvVarSource): exactly one of its fields."""

    secret_key_ref: SecretKeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: ConfigMapKeySelector | None = Field(default=None, description="A key of a ConfigMap.")
    field_ref: ObjectFieldSelector | None = Field(default=None, description="A field of the pod.")
    resource_field_ref: ResourceFieldSelector | None = Field(
        default=None, description="A resource request or limit of the container."
    )

    rules = (
        Rule(
            cel=" + ".join(f"(has(self.{source}) ? 1 : 0)" for source in _SOURCES) + " == 1",
            message="must set exactly one of " + ", ".join(_SOURCES),
            check=lambda s: (
                [s.secret_key_ref, s.config_map_key_ref, s.field_ref, s.resource_field_ref].count(None)
                == len(_SOURCES) - 1
            ),
        ),
    )


class EnvVar(ApiModel):
    """An environment variable for the workload container."""

    name: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=256)] = Field(
        description="Variable name."
    )
    value: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="Literal value. Use valueFrom for anything secret."
    )
    value_from: EnvVarSource | None = Field(
        default=None, description="Where the value comes from instead: a Secret, a ConfigMap, the pod or its resources."
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
    ListType(("name",)),
    Field(
        default=[],
        max_length=128,
        description="Extra environment variables for the workload container. One named PYTHONUNBUFFERED, HOME or "
        "TORCHINDUCTOR_CACHE_DIR replaces the operator's default; the names torch.distributed needs are reserved.",
    ),
]
