"""The scaleml.dev/v1alpha1 API: the three kinds."""

from __future__ import annotations

from scaleml_api.conditions import SHARED, Vocabulary
from scaleml_api.kind import AnyKind
from scaleml_api.v1alpha1 import driftmonitor, modeldeployment, trainingjob
from scaleml_api.v1alpha1.driftmonitor import DRIFT_MONITOR
from scaleml_api.v1alpha1.modeldeployment import MODEL_DEPLOYMENT
from scaleml_api.v1alpha1.trainingjob import TRAINING_JOB

KINDS: tuple[AnyKind, ...] = (TRAINING_JOB, MODEL_DEPLOYMENT, DRIFT_MONITOR)
# The condition types, reasons and Event reasons: those every kind shares, then each kind's.
VOCABULARIES: tuple[Vocabulary, ...] = (
    SHARED,
    trainingjob.VOCABULARY,
    modeldeployment.VOCABULARY,
    driftmonitor.VOCABULARY,
)

__all__ = ["DRIFT_MONITOR", "KINDS", "MODEL_DEPLOYMENT", "TRAINING_JOB", "VOCABULARIES"]
