"""Real containers on the real node: what KWOK cannot show, checked the way a user would.

Pods here run in a namespace that enforces Pod Security "restricted", under runc with the
RuntimeDefault seccomp profile; names resolve through CoreDNS and Services route through kube-proxy.
The module's last test stops the node and compares the host with what it was before the node began.
"""

from __future__ import annotations

import json

import pytest

from tests.node.conftest import NodeRun, restricted_pod, run_to_end
from tests.support.fixtures import RESTRICTED, NamespaceFactory
from tests.support.kubectl import Kubectl
from tests.support.node import host
from tests.support.node.config import NODE_NAME
from tests.support.node.node import RealNode

pytestmark = pytest.mark.node


def test_a_restricted_pod_runs_as_its_user_with_a_read_only_root(
    real_node: RealNode, kubectl: Kubectl, make_namespace: NamespaceFactory
) -> None:
    namespace = make_namespace(RESTRICTED)
    command = (
        "id -u; id -G; grep NoNewPrivs /proc/self/status; grep Seccomp: /proc/self/status;"
        " touch /root-file 2>/dev/null && echo root-writable || echo root-read-only;"
        " echo data > /scratch/file && stat -c '%u:%g' /scratch/file;"
        " echo 'all checked' > /dev/termination-log"
    )
    done = run_to_end(kubectl, namespace, restricted_pod("restricted", command))

    assert done["spec"]["nodeName"] == NODE_NAME
    assert done["status"]["phase"] == "Succeeded", done["status"]
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["message"].strip() == "all checked"
    uid, groups, no_new_privs, seccomp, root, owner = kubectl.run("logs", "restricted", "-n", namespace).stdout.split(
        "\n"
    )[:6]
    assert uid == "1000"
    assert "2000" in groups.split()  # fsGroup
    assert no_new_privs.split() == ["NoNewPrivs:", "1"]
    assert seccomp.split() == ["Seccomp:", "2"]  # a filter: RuntimeDefault
    assert root == "root-read-only"
    assert owner == "1000:2000"


def test_a_failing_container_reports_its_exit_code_and_message(
    real_node: RealNode, kubectl: Kubectl, make_namespace: NamespaceFactory
) -> None:
    namespace = make_namespace(RESTRICTED)
    done = run_to_end(
        kubectl, namespace, restricted_pod("fails", "echo 'no column age' > /dev/termination-log; exit 2")
    )
    assert done["status"]["phase"] == "Failed"
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"].strip()) == (2, "no column age")


def test_a_service_answers_by_its_dns_name(
    real_node: RealNode, kubectl: Kubectl, make_namespace: NamespaceFactory
) -> None:
    namespace = make_namespace(RESTRICTED)
    server = restricted_pod(
        "web",
        "mkdir -p /scratch/www && echo hello-from-web > /scratch/www/index.html && httpd -f -p 8080 -h /scratch/www",
    )
    server["spec"]["restartPolicy"] = "Always"
    server["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kubectl.run(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [server, service]}),
    )
    kubectl.run("wait", "-n", namespace, "--for=condition=Ready", "pod/web", "--timeout=60s")

    # A Service routes once kube-proxy has programmed the pod's endpoint, which can trail the pod's
    # readiness by seconds on a busy host; until then its rule refuses ("No route to host"), so the
    # client retries as any client of a fresh rollout would. busybox's wget -T crashes; `timeout`
    # bounds each try instead.
    url = f"http://web.{namespace}.svc.cluster.local/"
    client = restricted_pod(
        "client", f"for try in $(seq 30); do timeout 5 wget -qO- {url} && exit 0; sleep 1; done; exit 1"
    )
    done = run_to_end(kubectl, namespace, client, timeout=240)
    assert done["status"]["phase"] == "Succeeded", kubectl.run("logs", "client", "-n", namespace, check=False).stdout
    # Tries refused before the route existed leave their errors above the page.
    assert kubectl.run("logs", "client", "-n", namespace).stdout.splitlines()[-1] == "hello-from-web"


def test_the_node_leaves_the_host_as_it_found_it(node_run: NodeRun, kubectl: Kubectl) -> None:
    node_run.node.stop()
    assert host.differences(node_run.before, host.snapshot()) == []
    assert kubectl.find("node", NODE_NAME, "") is None
    assert not list(node_run.node.running())
