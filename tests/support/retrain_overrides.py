"""What a DriftMonitor's retraining may not change of the job it retrains: each attempt and the field it names.

Every one would let whoever may edit a DriftMonitor run other code, as someone else, on other data
or elsewhere, through a TrainingJob the operator creates with its own rights.
"""

from __future__ import annotations

from typing import Any

FORBIDDEN_OVERRIDES: dict[str, dict[str, Any]] = {
    "image": {"image": "attacker/miner:latest"},
    "model.entrypoint": {"model": {"architecture": "custom", "entrypoint": "os:system"}},
    "model.params": {"model": {"params": {"hiddenSizes": [4096, 4096, 4096]}}},
    "env": {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]},
    "data.volumeClaim": {"data": {"volumeClaim": "other-team-data"}},
    "data.target": {"data": {"target": "salary"}},
    "output": {"output": {"volumeClaim": "other-team-models", "modelName": "theirs"}},
    "checkpoint": {"checkpoint": {"volumeClaim": "other-team-data"}},
    "scheduling": {"scheduling": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}},
    "podMetadata": {"podMetadata": {"annotations": {"sidecar.istio.io/inject": "false"}}},
    "serviceAccountName": {"serviceAccountName": "admin"},
    "volumes": {"volumes": [{"name": "host", "hostPath": {"path": "/"}}]},
}
