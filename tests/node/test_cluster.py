"""`make cluster-node`: the local cluster on one real node, where the demo's manifests train and serve
in real pods as a user applies them, and a Ctrl-C leaves the host as it was."""

from __future__ import annotations

import signal
from functools import partial

import pytest

from scaleml_local.demo.scenario import NAME as DEMO_NAME
from tests.node.conftest import NodeRun, finished
from tests.node.traffic import served
from tests.support.cluster import DEMO_MANIFESTS
from tests.support.cluster_process import cluster_process, printed_kubeconfig
from tests.support.kubectl import Kubectl
from tests.support.manifests import EXAMPLES, ROOT
from tests.support.node import host
from tests.support.node.config import NODE_NAME
from tests.support.polling import wait_for

pytestmark = pytest.mark.node

NAMESPACE = "default"


def test_make_cluster_node_trains_and_serves_the_demo_in_real_pods_and_stops_clean(
    node_run: NodeRun, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # One real node per machine: the session's stops meanwhile (the next test that needs it starts it again).
    node_run.node.stop()
    # A short directory: the kubelet's sockets are in it.
    scratch = tmp_path_factory.mktemp("cluster")
    output, directory = scratch / "output.txt", scratch / "cluster"
    with cluster_process(directory, output, "--real-node") as process:
        # The workload image is built from this checkout at each start: minutes.
        kubeconfig = printed_kubeconfig(process, output, 900)
        banner = output.read_text()
        assert "one real node" in banner
        command = f"kubectl apply -f manifests/examples/volumes.yaml -f {DEMO_MANIFESTS.relative_to(ROOT)}/"
        assert command in banner, banner

        # As the banner says.
        kubectl = Kubectl(kubeconfig)
        kubectl.run("apply", "-f", str(EXAMPLES / "volumes.yaml"), "-f", str(DEMO_MANIFESTS))
        job = wait_for(partial(finished, kubectl, NAMESPACE, DEMO_NAME), 420, "the demo's TrainingJob to finish")
        trained = job["status"]
        assert trained["phase"] == "Succeeded", (trained, kubectl.run("logs", f"job/{DEMO_NAME}", check=False).stdout)
        assert trained["modelVersion"] == 1
        nodes = kubectl.run("get", "pods", "-o", "jsonpath={.items[*].spec.nodeName}").stdout.split()
        assert set(nodes) == {NODE_NAME}
        wait_for(
            partial(served, kubectl, NAMESPACE, 1, DEMO_NAME), 300, "the demo's ModelDeployment to serve version 1"
        )
        # The monitor's pod runs, and waits for traffic to test.
        monitor = wait_for(
            lambda: kubectl.find("deployment", f"{DEMO_NAME}-monitor", NAMESPACE), 120, "the monitor's Deployment"
        )
        kubectl.run("rollout", "status", f"deployment/{monitor['metadata']['name']}", "--timeout=120s")

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=180) == 0, output.read_text()
    assert "Stopped: operator, the real node, KWOK" in output.read_text()
    assert host.differences(node_run.before, host.snapshot()) == []
