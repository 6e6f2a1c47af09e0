"""The docs stay true: generated pages match the models, and every relative link lands somewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

from scaleml_api.reference import API_PAGE, REFERENCE_DIR, heading, pages
from scaleml_api.v1alpha1 import KINDS, VOCABULARIES
from scaleml_api.validation import InvalidSpecError, parse_spec
from scaleml_api.vocabulary_reference import CONDITIONS_EVENTS_PAGE
from tests.support.docs import DOCS, FENCE, README, example_objects, markdown_files
from tests.support.manifests import ROOT

GENERATED = ROOT / REFERENCE_DIR

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target), with an optional "title".
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of `path` outside fenced code blocks, with their numbers."""
    fenced = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: its text, lowercase, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, underscores, hyphens and spaces
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor of the headings of `path`, repeated titles numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = github_anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


@dataclass(frozen=True)
class Link:
    source: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}: {self.target}"


def links(path: Path) -> Iterator[Link]:
    for number, line in _prose(path):
        line = INLINE_CODE.sub("", line)
        targets = [match.group(1) for match in LINK.finditer(line)]
        if definition := DEFINITION.match(line):
            targets.append(definition.group(1))
        for target in targets:
            yield Link(path, number, target)


def relative(link: Link) -> bool:
    return not SCHEME.match(link.target) and not link.target.startswith("//")


def resolve(link: Link) -> tuple[Path, str]:
    """The file a relative link points to, and its anchor ("" when none)."""
    target, _, fragment = link.target.partition("#")
    path = (link.source.parent / unquote(target)).resolve() if target else link.source
    return path, unquote(fragment)


# ---- generated pages


@pytest.mark.parametrize("name", sorted(pages()))
def test_generated_reference_pages_match_the_models(name: str) -> None:
    """docs/reference/ is generated; run `make crds` after changing an API model or a vocabulary."""
    path = GENERATED / name
    assert path.is_file(), f"{REFERENCE_DIR / name} is missing: run `make crds`"
    assert path.read_text() == pages()[name], f"{REFERENCE_DIR / name} is stale: run `make crds`"


def test_docs_reference_holds_only_generated_pages() -> None:
    """A page dropped from the generator must not linger with stale content."""
    assert sorted(path.name for path in GENERATED.iterdir()) == sorted(pages())


def test_the_reference_covers_every_kind_and_vocabulary() -> None:
    api = pages()[API_PAGE]
    conditions = pages()[CONDITIONS_EVENTS_PAGE]
    for kind in KINDS:
        assert f"## {heading(kind)}" in api
    for vocabulary in VOCABULARIES:
        assert f"## {vocabulary.kind or 'Every kind'}" in conditions
        for term in [*vocabulary.conditions, *vocabulary.reasons, *vocabulary.events]:
            assert f"`{term.name}`" in conditions


# ---- links


def test_the_link_checker_reads_what_github_renders() -> None:
    assert github_anchor("TrainingJob (`tj`)") == "trainingjob-tj"
    assert github_anchor("Install, upgrade & remove") == "install-upgrade--remove"
    assert github_anchor("What a `TrainingJob` becomes") == "what-a-trainingjob-becomes"
    assert github_anchor("The [loop](x.md) itself") == "the-loop-itself"
    found = list(links(README))
    assert found, "README.md links nowhere"
    assert all(link.target for link in found)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link names a file (or directory) of the repository, and a heading of it if it has an anchor."""
    broken = []
    for link in filter(relative, links(path)):
        target, fragment = resolve(link)
        if not target.is_relative_to(ROOT) or not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{link}: no heading #{fragment} in {target.relative_to(ROOT)}")
    assert broken == []


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    reached, todo = {README.resolve()}, [README.resolve()]
    while todo:
        for link in filter(relative, links(todo.pop())):
            target, _ = resolve(link)
            if target.suffix == ".md" and target.is_file() and target not in reached:
                reached.add(target)
                todo.append(target)
    orphans = [str(path.relative_to(ROOT)) for path in DOCS.rglob("*.md") if path.resolve() not in reached]
    assert orphans == []


# ---- examples


def test_example_objects_are_valid() -> None:
    """Every TrainingJob, ModelDeployment and DriftMonitor shown in the docs passes the operator's validation."""
    kinds = {kind.kind: kind for kind in KINDS}
    checked, invalid = set(), []
    for path, line, document in example_objects():
        try:
            parse_spec(kinds[document["kind"]], document["spec"])
        except InvalidSpecError as error:
            invalid.append(f"{path.relative_to(ROOT)}:{line}: {document['kind']}: {error}")
        checked.add((path, document["kind"]))
    assert invalid == []
    assert {kind for path, kind in checked if path == README} == set(kinds), "the README's example shows every kind"
