"""The container images: pinned bases, numeric non-root users, no torch in the operator, tags the manifests use.

No container engine runs here: the Dockerfiles are read, and `make -n images` says what would be built.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from typing import Any

import pytest

from scaleml_operator.builders.meta import POD_SECURITY_CONTEXT
from scaleml_operator.config import DEFAULT_WORKLOAD_IMAGE
from tests.support.kustomize import BASE, build, find
from tests.support.manifests import ROOT

OPERATOR = "Dockerfile"
WORKLOADS = "workloads.Dockerfile"
# An exact release (x.y.z in the tag), or a digest: never a moving tag such as `3.11-slim` or `latest`.
PINNED = re.compile(r"^[^@\s]+(:[^@\s]*\d+\.\d+\.\d+[^@\s]*(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def _instructions(name: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in (ROOT / name).read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if stripped.endswith("\\"):
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _final_stage(name: str) -> list[Instruction]:
    instructions = _instructions(name)
    last_from = max(index for index, instruction in enumerate(instructions) if instruction.keyword == "FROM")
    return instructions[last_from:]


def _pip_installs(name: str) -> list[list[str]]:
    """The arguments of every `pip install` in RUN instructions."""
    installs = []
    for instruction in _instructions(name):
        if instruction.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", instruction.arguments):
            words = shlex.split(command)
            if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
                installs.append(words[2:])
    return installs


@pytest.mark.parametrize("name", [OPERATOR, WORKLOADS])
def test_base_images_are_pinned_to_an_exact_release(name: str) -> None:
    stages: set[str] = set()
    for instruction in _instructions(name):
        if instruction.keyword != "FROM":
            continue
        image, *alias = instruction.arguments.split()
        if image not in stages:
            assert PINNED.match(image), f"{name}: FROM {image} is not pinned"
        if alias:
            assert alias[0].upper() == "AS", instruction
            stages.add(alias[1])


def _operator_pod() -> dict[str, Any]:
    pod: dict[str, Any] = find(build(BASE), "Deployment", "scaleml-operator")["spec"]["template"]["spec"]
    return pod


def _user(name: str) -> int:
    users = [instruction.arguments for instruction in _final_stage(name) if instruction.keyword == "USER"]
    assert users, f"{name} runs as root"
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", users[-1]), f"{name}: USER {users[-1]} is not numeric uid:gid"
    return int(users[-1].split(":")[0])


def test_images_run_as_the_numeric_non_root_users_of_their_pods() -> None:
    assert _user(OPERATOR) == _operator_pod()["securityContext"]["runAsUser"]
    # The pods the operator creates run as this uid.
    assert _user(WORKLOADS) == POD_SECURITY_CONTEXT["runAsUser"]


def test_the_operator_image_installs_the_operator_extra_without_torch() -> None:
    assert _pip_installs(OPERATOR) == [[".[operator]"]]
    assert not [i for i in _instructions(OPERATOR) if "torch" in i.arguments]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["operator"]]:
        assert not re.match(r"torch\b", requirement), requirement


def test_the_workloads_image_adds_the_workloads_extra_to_a_pytorch_cuda_base() -> None:
    assert _pip_installs(WORKLOADS) == [[".[workloads]"]]
    base = _final_stage(WORKLOADS)[0].arguments.split()[0]
    assert base.startswith("pytorch/pytorch:"), base
    assert "-cuda" in base, base


def test_make_images_builds_the_tags_the_operator_and_its_deployment_name() -> None:
    dry_run = subprocess.run(["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    tags = {}
    for line in dry_run.stdout.splitlines():
        words = shlex.split(line)
        if "build" in words:
            tags[words[words.index("-f") + 1]] = words[words.index("-t") + 1]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    deployed = _operator_pod()["containers"][0]
    assert tags == {OPERATOR: deployed["image"], WORKLOADS: DEFAULT_WORKLOAD_IMAGE}
    assert tags[OPERATOR] == f"scaleml/operator:{version}"
    assert tags[WORKLOADS] == f"scaleml/workloads:{version}"
