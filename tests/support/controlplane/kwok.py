"""KWOK, which keeps fake Nodes Ready and plays the kubelet for the pods scheduled onto them.

Fake Nodes (`node_manifest`: 32 cpu, 128Gi memory, 110 pods, 8 ``nvidia.com/gpu`` by default)
that KWOK manages; pods scheduled onto them turn Running/Ready, and Job pods complete.

Simulated pod outcomes
----------------------
KWOK's default ``pod-complete`` stage turns every Running pod owned by a Job into ``Succeeded`` (exit
code 0). To make a pod fail instead, give it (e.g. in a Job's pod template) the annotation::

    scaleml.dev/kwok-exit-code: "3"

A Running pod whose annotation holds a value other than ``"0"`` is turned ``Failed`` with every container
terminated with that exit code (reason ``Error``); this works for any pod, owned by a Job or not. The value
must be a decimal integer. Use ``restartPolicy: Never``: no kubelet restarts containers here. Two more
annotations shape how such a pod ends:

    scaleml.dev/kwok-exit-reason: OOMKilled             # the containers' terminated reason instead of Error
    scaleml.dev/kwok-disruption: PreemptionByScheduler  # the pod also gets DisruptionTarget=True, this reason

the second as the scheduler (preemption), the eviction API, the taint manager or the kubelet (node
shutdown, node pressure) mark a pod they are about to end, for a Job's pod failure policy to see. The stage
(:data:`EXIT_CODE_STAGE`) has weight 1000000 while the default ``pod-complete`` stage has weight 0, and
KWOK picks among matching stages by weight, skipping weight-0 stages whenever some matching stage has a
positive weight (``Lifecycle.Match`` in sigs.k8s.io/kwok v0.8.0 ``pkg/utils/lifecycle``), so such a pod is
never completed successfully first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from tests.support.controlplane.binaries import KUBERNETES_VERSION

EXIT_CODE_ANNOTATION: Final = "scaleml.dev/kwok-exit-code"
EXIT_REASON_ANNOTATION: Final = "scaleml.dev/kwok-exit-reason"
DISRUPTION_ANNOTATION: Final = "scaleml.dev/kwok-disruption"

#: The extra KWOK stage behind :data:`EXIT_CODE_ANNOTATION` (see the module docstring).
EXIT_CODE_STAGE: Final = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: scaleml-pod-exit-code
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
    - key: '.metadata.annotations["{EXIT_CODE_ANNOTATION}"]'
      operator: 'Exists'
    - key: '.metadata.annotations["{EXIT_CODE_ANNOTATION}"]'
      operator: 'NotIn'
      values:
      - '0'
  # pod-complete (which also matches Running Job pods) has weight 0: any matching stage with a
  # positive weight wins, always.
  weight: 1000000
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      {{{{ $exitCode := index .metadata.annotations "{EXIT_CODE_ANNOTATION}" }}}}
      {{{{ $reason := index .metadata.annotations "{EXIT_REASON_ANNOTATION}" }}}}
      {{{{ $disruption := index .metadata.annotations "{DISRUPTION_ANNOTATION}" }}}}
      conditions:
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "False"
        reason: PodFailed
        type: Ready
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "False"
        reason: PodFailed
        type: ContainersReady
      {{{{ if $disruption }}}}
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        reason: {{{{ $disruption | Quote }}}}
        message: "Simulated by KWOK ({DISRUPTION_ANNOTATION})."
        type: DisruptionTarget
      {{{{ end }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {{{{ $exitCode }}}}
            finishedAt: {{{{ $now | Quote }}}}
            reason: {{{{ if $reason }}}}{{{{ $reason | Quote }}}}{{{{ else }}}}Error{{{{ end }}}}
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Failed
"""


def stage_files(workdir: Path, default_stages: Path, extra_stages: Sequence[str | Path]) -> list[Path]:
    """KWOK's stage files: its default stages, then :data:`EXIT_CODE_STAGE` and ``extra_stages`` in ``workdir``."""
    configs = [default_stages]
    stage_texts = [EXIT_CODE_STAGE, *(s.read_text() if isinstance(s, Path) else s for s in extra_stages)]
    for index, text in enumerate(stage_texts):
        path = workdir / f"kwok-stages-extra-{index}.yaml"
        path.write_text(text)
        configs.append(path)
    return configs


def kwok_args(kubeconfig: Path, configs: Sequence[Path]) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        *(f"--config={c}" for c in configs),
        # Only the nodes it was given (annotated so, node_manifest): a real node's pods are the kubelet's.
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-lease-duration-seconds=40",
        "--cidr=10.244.0.0/16",
        "--node-ip=10.0.0.1",
    ]


def node_manifest(name: str, capacity: Mapping[str, str]) -> dict[str, Any]:
    """A fake Node for KWOK to manage, with ``capacity`` allocatable."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "kwok-gpu",
                "type": "kwok",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": KUBERNETES_VERSION,
                "kubeProxyVersion": KUBERNETES_VERSION,
            },
        },
    }


def node_ready(node: Mapping[str, Any] | None) -> bool:
    """Whether a Node (as the API returns it; None when it does not exist) has its Ready condition True."""
    if node is None:
        return False
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
