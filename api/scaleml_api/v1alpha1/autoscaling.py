"""The autoscaling/v2 metric types a ModelDeployment's autoscaler takes, typed all the way down.

They follow Kubernetes' own validation of a HorizontalPodAutoscaler (pkg/apis/autoscaling/validation),
checked at admission, so that a metric the API server would refuse in the HPA, or that the HPA
controller could not use (a target type its source ignores, a selector it cannot parse), is
refused in the ModelDeployment, naming its field, and never reaches the HPA.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, StringConstraints

from scaleml_api.base import ApiModel, PositiveQuantity, Rule
from scaleml_api.v1alpha1.pods import LabelSelector

_DOT_SEGMENTS: Final = (".", "..")


def _path_segment(name: str) -> str:
    if name in _DOT_SEGMENTS:
        raise ValueError("must not be '.' or '..'")
    return name


# The name of a metric, as the custom or external metrics API serves it: it becomes a segment of
# that API's request paths, so Kubernetes takes any path segment name (IsValidPathSegmentName).
MetricName = Annotated[
    str,
    StringConstraints(pattern=r"^[^/%]+$", max_length=253),
    AfterValidator(_path_segment),
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "!(self in ['.', '..'])", "message": "must not be '.' or '..'"}]
        }
    ),
]


class MetricIdentifier(ApiModel):
    """Which metric (the autoscaling/v2 MetricIdentifier)."""

    name: MetricName = Field(
        description="The metric's name, as the metrics adapter serves it (at most 253 characters, no '/' or '%', "
        "not '.' or '..')."
    )
    selector: LabelSelector | None = Field(
        default=None,
        description="Picks the metric's series by their labels (the adapter's); absent: the name alone picks them.",
    )


TargetType = Literal["Value", "AverageValue", "Utilization"]


def _names_its_field(target_type: TargetType, field: str, attribute: str) -> Rule:
    """The rule that `field` is set exactly when the target's type is `target_type`."""
    return Rule(
        cel=f"has(self.{field}) == (self.type == '{target_type}')",
        message=f"{field} must be set exactly when type is {target_type}",
        check=lambda t: (getattr(t, attribute) is not None) == (t.type == target_type),
        field_path=f".{field}",
    )


class MetricTarget(ApiModel):
    """The value to keep a metric at (the autoscaling/v2 MetricTarget): exactly the field its type names."""

    type: TargetType = Field(
        description="Value (the metric as a whole, in value), AverageValue (the metric per replica, in "
        "averageValue) or Utilization (averageUtilization; only for resource metrics, so for neither source "
        "here)."
    )
    value: PositiveQuantity | None = Field(
        default=None, description='The target of the metric, with type Value: a quantity, such as "100m", 20 or "1.5k".'
    )
    average_value: PositiveQuantity | None = Field(
        default=None,
        description="The target of the metric divided by the replicas, with type AverageValue: a quantity.",
    )
    average_utilization: int | None = Field(
        default=None,
        ge=1,
        description="Percent of the pods' resource request, with type Utilization (not for Pods or External).",
    )

    rules = (
        _names_its_field("Value", "value", "value"),
        _names_its_field("AverageValue", "averageValue", "average_value"),
        _names_its_field("Utilization", "averageUtilization", "average_utilization"),
    )


class PodsMetricSource(ApiModel):
    """A metric of each Triton pod, averaged over the pods (the autoscaling/v2 PodsMetricSource)."""

    metric: MetricIdentifier = Field(description="The metric.")
    target: MetricTarget = Field(description="Its target: type AverageValue, the average over the pods.")

    # The HPA controller reads only averageValue of a Pods metric, whatever its type says.
    rules = (
        Rule(
            cel="self.target.type == 'AverageValue'",
            message="target.type must be AverageValue for a Pods metric",
            check=lambda s: s.target.type == "AverageValue",
            field_path=".target.type",
        ),
    )


class ExternalMetricSource(ApiModel):
    """A metric not of the pods, such as a queue's length (the autoscaling/v2 ExternalMetricSource)."""

    metric: MetricIdentifier = Field(description="The metric.")
    target: MetricTarget = Field(
        description="Its target: type Value (the metric as a whole) or AverageValue (the metric per replica)."
    )

    rules = (
        Rule(
            cel="self.target.type != 'Utilization'",
            message="target.type must be Value or AverageValue for an External metric",
            check=lambda s: s.target.type != "Utilization",
            field_path=".target.type",
        ),
    )


# Not Object or ContainerResource: the HPA is made with the operator's rights on behalf of whoever
# may edit the ModelDeployment, and those would have it read metrics of objects other than the
# model's pods.
class MetricSpec(ApiModel):
    """An autoscaling/v2 MetricSpec of type Pods or External."""

    type: Literal["Pods", "External"] = Field(description="Pods (a metric of the Triton pods) or External.")
    pods: PodsMetricSource | None = Field(default=None, description="The metric and its target, with type Pods.")
    external: ExternalMetricSource | None = Field(
        default=None, description="The metric and its target, with type External."
    )

    rules = (
        Rule(
            cel="self.type == 'Pods' ? has(self.pods) && !has(self.external) : has(self.external) && !has(self.pods)",
            message="set the source its type names (pods or external), and only that one",
            check=lambda m: (m.pods is not None, m.external is not None) == (m.type == "Pods", m.type == "External"),
            field_path=".type",
        ),
    )
