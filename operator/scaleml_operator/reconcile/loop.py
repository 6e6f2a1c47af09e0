"""The one reconcile loop: every kind runs it, on every trigger.

    the parent as the watch gave it ─▶ verdict on its spec (full runs) or the typed spec (refreshes)
    read(owner, spec, parent, context)         the kind's only reads: its inputs and live children
    children(owner, spec, inputs, config)      pure: what to apply, what must be absent, what to create
    apply / delete / create                    skipped on a refresh unless stale(inputs)
    observed(status, owner, spec, inputs, applied, generation=, now=)    pure: the kind's status fields
    one status write, conditional on the resourceVersion read (re-composed, purely, on a conflict)
    acceptance_events + events(previous, status)   pure, from what the write changed ─▶ kube.events.post

A full run (create, resume, a spec change) applies every child and records the verdict on the
spec; a refresh (a child, an input or a driving status field changed) re-applies only what
`stale` says no longer matches. Events come from the status the write changed, so a retried run
that changes nothing posts nothing.

Reads come from the watches' caches (`reconcile.cache`), not from requests: a refresh that finds
nothing changed makes no request at all, which is what lets a periodic resync of every object
cost nothing when the cluster is quiet. What a cache may have missed is caught by the writes'
preconditions: the status write by resourceVersion, a known child's apply by uid. The status
this process wrote itself is read as written until the cache shows it (`reconcile.own_writes`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Generic, Protocol, TypeVar

from kubernetes.client.exceptions import ApiException

from scaleml_api.base import API_VERSION
from scaleml_api.kind import Kind, SpecT
from scaleml_api.validation import parse_spec_or_none
from scaleml_operator.builders.meta import Children, Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.kube import apply as kube
from scaleml_operator.kube import events as kube_events
from scaleml_operator.kube.admission import GUARD
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile.known import KNOWN
from scaleml_operator.reconcile.own_writes import OWN_WRITES
from scaleml_operator.reconcile.terminating import TERMINATING, created
from scaleml_operator.status.acceptance import Verdict, acceptance_events, applied, judge
from scaleml_operator.status.conditions import Event

InputsT = TypeVar("InputsT")
InputsCo = TypeVar("InputsCo", covariant=True)
InputsContra = TypeVar("InputsContra", contravariant=True)
SpecContra = TypeVar("SpecContra", contravariant=True)
Object = dict[str, Any]

_ATTEMPTS: Final = 5


class StatusConflictError(Exception):
    """The object kept changing while its status was written: run again later."""


@dataclass(frozen=True)
class Context:
    """What a run knows besides the object: the operator's settings and the caches its reads may use."""

    config: OperatorConfig
    # kopf indexes by id, for reads that a cache answers (e.g. the versions exported per model).
    indexes: Mapping[str, Any] = field(default_factory=dict)
    # Whether this run is a full one (it applies every child): a read may need more for that.
    full: bool = False


@dataclass(frozen=True)
class Applied:
    """What the apply step did: the children as the API server returned them, and what it refused."""

    # Whether the children were applied this run (a refresh that was not stale applies nothing).
    done: bool = False
    live: Mapping[tuple[str, str], Object] = field(default_factory=dict)
    rejected: Sequence[str] = ()
    # Whether one of those refusals was a denial that may go through later as it is (kube.DeniedError).
    denied: bool = False
    kept_back: str = ""
    # Names of the objects created (or found already there, created by an earlier run).
    created: Sequence[str] = ()
    # The objects to create that the API server refused: what the spec asks of the children is in
    # `rejected`; these follow from what the kind observed (a retraining job), which says so itself.
    not_created: Sequence[str] = ()
    # "Kind name" of objects in the way that this parent does not control: left untouched.
    foreign: Sequence[str] = ()

    def get(self, kind: str, name: str, default: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The child as applied this run, else `default` (as read before)."""
        return self.live.get((kind, name), default)


class Read(Protocol[SpecContra, InputsCo]):
    def __call__(self, owner: Owner, spec: SpecContra, parent: Mapping[str, Any], context: Context) -> InputsCo: ...


class Observe(Protocol[SpecContra, InputsContra]):
    def __call__(
        self,
        current: Mapping[str, Any],
        owner: Owner,
        spec: SpecContra,
        inputs: InputsContra,
        applied: Applied,
        *,
        generation: int | None,
        now: datetime,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Reconciler(Generic[SpecT, InputsT]):
    """One kind's part of the loop: its reads, and the pure functions that decide everything else."""

    kind: Kind[SpecT, Any]
    read: Read[SpecT, InputsT]
    children: Callable[[Owner, SpecT, InputsT, OperatorConfig], Children]
    stale: Callable[[InputsT], bool]
    observed: Observe[SpecT, InputsT]
    events: Callable[[Mapping[str, Any], Mapping[str, Any]], list[Event]]


@dataclass(frozen=True)
class Written:
    """A status write that went through: the object as it now is, and its status before."""

    body: Object
    previous: Mapping[str, Any]


def run(
    reconciler: Reconciler[SpecT, InputsT],
    name: str,
    namespace: str,
    context: Context,
    *,
    full: bool,
    body: Mapping[str, Any] | None = None,
) -> bool:
    """One pass of the loop over the object `namespace/name`, which may have gone meanwhile.

    `body` is the object as the event that triggered the run carried it; without it, the object is
    taken from the watch's cache. False when the object's namespace is being deleted: nothing was
    written, and the object goes with its namespace (reconcile.terminating).
    """
    try:
        return _pass(reconciler, name, namespace, context, full=full, body=body)
    except kube.NamespaceTerminatingError:
        # The children's deletions (the namespace's) trigger runs that would make them anew.
        TERMINATING.refused(namespace)
        return False


def _pass(
    reconciler: Reconciler[SpecT, InputsT],
    name: str,
    namespace: str,
    context: Context,
    *,
    full: bool,
    body: Mapping[str, Any] | None,
) -> bool:
    kind = reconciler.kind
    parent = body if body is not None else cache.one(context.indexes, cache.PARENTS[kind.kind], (namespace, name))
    if parent is None or parent["metadata"].get("deletionTimestamp"):
        return True
    if TERMINATING.goes_with(namespace, created(parent)):
        return False
    parent = OWN_WRITES.newest(parent)
    now = datetime.now(UTC)
    verdict: Verdict[SpecT] | None = judge(kind, parent, now) if full else None
    spec = verdict.spec if verdict is not None else parse_spec_or_none(kind, parent.get("spec") or {})

    if spec is None:
        # Nothing is applied until the spec is corrected; a refresh has nothing to add to the verdict.
        if verdict is None:
            return True
        rejection = verdict

        def compose(status: Mapping[str, Any], generation: int | None, now: datetime) -> dict[str, Any]:
            return rejection.over(status)

    else:
        owner = Owner(kind.kind, name, namespace, parent["metadata"]["uid"], parent["metadata"].get("generation"))
        inputs = reconciler.read(owner, spec, parent, context)
        done = apply_children(
            owner,
            reconciler.children(owner, spec, inputs, context.config),
            full or reconciler.stale(inputs),
            observed_before="observedGeneration" in (parent.get("status") or {}),
        )
        typed = spec

        def compose(status: Mapping[str, Any], generation: int | None, now: datetime) -> dict[str, Any]:
            current = verdict.over(status) if verdict is not None else dict(status)
            if done.done:
                current["conditions"] = applied(
                    current,
                    foreign=list(done.foreign),
                    rejected=list(done.rejected),
                    denied=done.denied,
                    kept_back=done.kept_back,
                    generation=generation,
                    now=now,
                )
            current.update(reconciler.observed(current, owner, typed, inputs, done, generation=generation, now=now))
            return current

    written = write_status(kind, parent, compose)
    if written is not None:
        status = written.body.get("status") or {}
        kube_events.post(
            written.body,
            [*acceptance_events(kind.kind, written.previous, status), *reconciler.events(written.previous, status)],
        )
    return True


def apply_children(owner: Owner, children: Children, everything: bool, *, observed_before: bool = True) -> Applied:
    """Applies the children (all of them, or only those to create when not `everything`).

    An object of a child's name that this parent does not control is left exactly as it is and
    reported, never adopted: server-side apply would otherwise rewrite another team's Service and
    make it ours to garbage-collect. Nothing after it is applied either: children are listed in
    the order they depend on each other, and pods after a foreign ServiceAccount or RoleBinding
    would run with another team's rights. What the API server
    refuses is collected, not raised, and the other children still apply: a child refused as invalid
    cannot heal until the spec changes, and one the cluster's admission denied (a quota, a policy) is
    tried again by the periodic resync (handlers.resync), not by a retry storm.

    Children that must be absent are looked for only once the parent was `observed_before`: what
    a parent's children are follows from its spec, so before its first status, every child an
    earlier run could have made is one this run applies too.
    """
    live: dict[tuple[str, str], Object] = {}
    rejected: list[str] = []
    denied = False
    foreign: list[str] = []
    created: list[str] = []
    not_created: list[str] = []
    if everything:
        for manifest in children.hand_over:
            _hand_over(manifest)
        for manifest in children.apply:
            kind, child = manifest["kind"], manifest["metadata"]["name"]
            try:
                applied_child = _apply(owner, manifest)
            except kube.RefusedError as error:
                rejected.append(f"{kind} {child}: {error}")
                denied = denied or isinstance(error, kube.DeniedError)
                continue
            if applied_child is None:
                foreign.append(f"{kind} {child}")
                break
            live[(kind, child)] = applied_child
        for api_version, kind, child in children.absent if observed_before else ():
            _delete(owner, api_version, kind, child)
    for manifest in children.create if not foreign else ():
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        try:
            fresh = kube.create(manifest)
        except kube.RefusedError as error:
            not_created.append(f"{kind} {child}: {error}")
            continue
        # One that exists counts only if an earlier run made it for the same reason (same labels).
        existing = None if fresh else kube.get(manifest["apiVersion"], kind, child, owner.namespace)
        if fresh or (existing is not None and _labelled_alike(existing, manifest)):
            created.append(child)
        else:
            foreign.append(f"{kind} {child}")
    kept_back = children.kept_back if everything else ""
    return Applied(
        everything, live, rejected, denied, kept_back, created=created, foreign=foreign, not_created=not_created
    )


def _apply(owner: Owner, manifest: Mapping[str, Any]) -> Object | None:
    """The child as applied, or None when the object of its name is not this parent's (left untouched).

    A child this process applied before is applied with its uid as the precondition: one request.
    Any other (or a known one since deleted or replaced) is applied at once where the admission
    policy refuses the operator others' objects (kube.admission), and read first elsewhere, then
    applied with the uid read if it is ours.
    """
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    known = KNOWN.uid(owner.uid, kind, name)
    if known is not None:
        try:
            return _remembered(owner, kube.apply(manifest, uid=known))
        except kube.NotThatObjectError:
            # Deleted, or replaced by another object of that name, since: as if never seen.
            KNOWN.forget(owner.uid, kind, name)
    if GUARD.in_force:
        try:
            return _remembered(owner, kube.apply(manifest))
        except kube.RejectedError:
            # Refused, and nothing written: by the policy or by the API server's own validation (which
            # runs first, as for another's Deployment whose selector may not change). Something of that
            # name may be in the way; the read-first path below tells what, and reports it as it would.
            # (A denial, kube.DeniedError, is the cluster's admission's whoever's object it is: reported.)
            pass
    existing = kube.get(manifest["apiVersion"], kind, name, owner.namespace)
    if existing is not None and not controlled_by(existing, owner.uid):
        return None
    return _remembered(owner, kube.apply(manifest, uid=existing["metadata"]["uid"] if existing else None))


def _hand_over(manifest: Mapping[str, Any]) -> None:
    try:
        kube.apply(manifest, manager=kube.HANDOVER_MANAGER, force=False)
    except kube.RefusedError:
        # The object went (its uid precondition failed), or was never whole, or admission denied the
        # write: nothing to keep, and the child's own apply that follows reports what is refused.
        pass
    except ApiException as error:
        # Conflict: another writer owns the field with another value, and keeps it.
        if error.status != kube.HTTP_CONFLICT:
            raise


def _remembered(owner: Owner, child: Object) -> Object:
    KNOWN.remember(owner, child["kind"], child["metadata"]["name"], child["metadata"]["uid"])
    return child


def _delete(owner: Owner, api_version: str, kind: str, name: str) -> None:
    known = KNOWN.uid(owner.uid, kind, name)
    if known is None:
        kube.delete_owned(api_version, kind, name, owner.namespace, owner.uid)
    else:
        kube.delete(api_version, kind, name, owner.namespace, uid=known)
        KNOWN.forget(owner.uid, kind, name)


def controlled_by(child: Mapping[str, Any], uid: str) -> bool:
    """Whether the object's controller (its ownerReference with controller: true) is the object `uid`."""
    references = child.get("metadata", {}).get("ownerReferences") or ()
    return any(reference.get("uid") == uid and reference.get("controller") for reference in references)


def _labelled_alike(existing: Mapping[str, Any], manifest: Mapping[str, Any]) -> bool:
    labels = existing.get("metadata", {}).get("labels") or {}
    wanted = manifest["metadata"].get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())


Compose = Callable[[Mapping[str, Any], "int | None", datetime], dict[str, Any]]


def write_status(kind: Kind[Any, Any], parent: Mapping[str, Any], compose: Compose) -> Written | None:
    """Patches the status `compose` makes of the freshest object, recomposing it when another writer came first.

    The patch carries the resourceVersion it was composed from: status lists such as conditions
    are replaced whole by a merge patch, so a writer that read an older status would otherwise
    undo what another (a pod, another handler) wrote since. Returns None when nothing changed.
    """
    body: Mapping[str, Any] | None = parent
    for _attempt in range(_ATTEMPTS):
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        meta = body["metadata"]
        status = body.get("status") or {}
        composed = compose(status, meta.get("generation"), datetime.now(UTC))
        update = {key: value for key, value in composed.items() if status.get(key) != value}
        if not update:
            return None
        try:
            version = kube.patch_status(
                API_VERSION, kind.kind, meta["name"], meta["namespace"], update, meta["resourceVersion"]
            )
        except kube.ConflictError:
            body = kube.get(API_VERSION, kind.kind, meta["name"], meta["namespace"])
            continue
        if version is None:
            # Not written: the object was deleted meanwhile, and there is nothing left to report on.
            return None
        now_status = {**status, **update}
        OWN_WRITES.wrote(meta["uid"], meta["resourceVersion"], version, now_status)
        return Written({**body, "metadata": {**meta, "resourceVersion": version}, "status": now_status}, status)
    raise StatusConflictError(
        f"{kind.kind} {parent['metadata']['namespace']}/{parent['metadata']['name']} kept changing"
    )
