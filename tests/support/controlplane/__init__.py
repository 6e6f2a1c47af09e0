"""A real Kubernetes control plane for the test suite, run as local subprocesses.

Two tiers share one process set:

* ``ControlPlane.start_api()`` starts **etcd** and **kube-apiserver** (client-certificate authentication,
  RBAC authorisation, the default admission plugins including ``PodSecurity`` and ``ServiceAccount``,
  a service-account signing key so that the TokenRequest API works, and a front-proxy client
  certificate so that aggregated APIs can be registered).
* ``ControlPlane.start_nodes()`` adds **kube-controller-manager** (every controller: garbage collection,
  namespace finalisation, Deployment/ReplicaSet/Job, ServiceAccount tokens...), **kube-scheduler** and
  **KWOK**, and registers fake Nodes (32 cpu, 128Gi memory, 110 pods, 8 ``nvidia.com/gpu``) that KWOK
  keeps Ready. Pods get scheduled onto them, turn Running/Ready, and Job pods complete.

Binaries are found by :func:`find_binaries`: each one is taken from ``$KUBEBUILDER_ASSETS`` when that
variable is set and the directory holds it (setup-envtest ships etcd, kube-apiserver and kubectl only),
otherwise from ``$SCALEML_CONTROL_PLANE_DIR/bin`` (default ``~/.cache/scaleml/control-plane/k8s-v1.36.3``,
built by ``make control-plane``). KWOK's default stages are read from
``$SCALEML_CONTROL_PLANE_DIR/kwok-stages.yaml``. A pod annotated ``scaleml.dev/kwok-exit-code`` fails
with that exit code, with the reason and pod condition other annotations give (see `kwok`).

By concern, one module each: `binaries` (locating them, the tiers), `pki` (certificates and
kubeconfigs), `processes` (starting, waiting for and ending a component), `components` (each
component's command line), `kwok` (KWOK's stages and fake nodes), `plane` (:class:`ControlPlane`).
This package names what the tests use. The pytest fixtures are in ``tests/support/fixtures.py``
and ``tests/conftest.py``.

Only the Python standard library, ``cryptography`` and PyYAML are used here.
"""

from tests.support.controlplane.binaries import (
    API_TIER,
    DEFAULT_CONTROL_PLANE_DIR,
    KUBERNETES_VERSION,
    NODES_TIER,
    Binaries,
    MissingBinariesError,
    control_plane_dir,
    find_binaries,
)
from tests.support.controlplane.kwok import (
    DISRUPTION_ANNOTATION,
    EXIT_CODE_ANNOTATION,
    EXIT_CODE_STAGE,
    EXIT_REASON_ANNOTATION,
)
from tests.support.controlplane.pki import Pki, generate_pki
from tests.support.controlplane.plane import ControlPlane
from tests.support.controlplane.processes import ControlPlaneError, tail

__all__ = [
    "API_TIER",
    "DEFAULT_CONTROL_PLANE_DIR",
    "DISRUPTION_ANNOTATION",
    "EXIT_CODE_ANNOTATION",
    "EXIT_CODE_STAGE",
    "EXIT_REASON_ANNOTATION",
    "KUBERNETES_VERSION",
    "NODES_TIER",
    "Binaries",
    "ControlPlane",
    "ControlPlaneError",
    "MissingBinariesError",
    "Pki",
    "control_plane_dir",
    "find_binaries",
    "generate_pki",
    "tail",
]
