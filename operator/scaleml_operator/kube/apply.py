"""Server-side apply of the objects the operator owns, under one field manager.

Apply, not create: re-running a handler, a restart or a crash at any point converges to the same
objects, and a changed spec reaches objects that already exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from kubernetes.client.exceptions import ApiException

from scaleml_operator.kube.client import request, resource

FIELD_MANAGER: Final = "scaleml-operator"
# Holds a field the operator stops applying that must keep its value until another writer takes it
# (a Deployment's replicas, when an autoscaler starts to own them): see Children.hand_over.
HANDOVER_MANAGER: Final = "scaleml-operator-handover"
HTTP_BAD_REQUEST: Final = 400
HTTP_FORBIDDEN: Final = 403
HTTP_NOT_FOUND: Final = 404
HTTP_CONFLICT: Final = 409
HTTP_UNPROCESSABLE: Final = 422
HTTP_INTERNAL_ERROR: Final = 500
# A list of objects' metadata only, not their bodies (falls back to JSON where a server lacks it).
_METADATA_LIST: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
_PAGE: Final = 500


# Names become parts of request paths: anything but a DNS subdomain (a namespace: a DNS label) could
# steer a request elsewhere. The API validates names at admission; this is the second line.
_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAMESPACE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class InvalidNameError(ValueError):
    """A name or namespace that is not one; no request was made."""


def checked(name: str | None, namespace: str | None) -> None:
    """Raises InvalidNameError unless `name` and `namespace` (where given) are valid as such."""
    if name is not None and (len(name) > 253 or not _NAME.fullmatch(name)):
        raise InvalidNameError(f"not an object name: {name!r}")
    if namespace and (len(namespace) > 63 or not _NAMESPACE.fullmatch(namespace)):
        raise InvalidNameError(f"not a namespace: {namespace!r}")


class RefusedError(Exception):
    """The API server refused the object itself: its owner reports it, and its other children still apply."""


class RejectedError(RefusedError):
    """The API server refused an object as invalid: applying it again cannot help until the spec changes."""


class DeniedError(RefusedError):
    """The cluster's admission denied an object for now (a ResourceQuota used up, a policy or webhook of the
    cluster's admins): the same object may go through later, once the quota or the policy changes."""


# How the API server words what its authorizers (RBAC and any other) refuse a request, after
# `<resource> "<name>" is forbidden: `: the same for a patch and for the create a server-side apply
# makes; and the two checks of the requester's own rights made in admission (the garbage collector's
# OwnerReferencesPermissionEnforcement). These are the operator's rights missing, not the object's fault.
_UNAUTHORIZED: Final = re.compile(
    r'is forbidden: (User "[^"]*" cannot |cannot set blockOwnerDeletion if an ownerReference refers to a '
    r"resource you can't set finalizers on|cannot set an ownerRef on a resource you can't delete)"
)
# An admission webhook's denial carries the code the webhook chose, and 400 when it chose none.
_WEBHOOK_DENIED: Final = re.compile(r'admission webhook "[^"]*" denied the request')
# A server-side apply of a field the kind's schema does not declare (one reaching an HPA through a
# free-form field of the spec, say) is answered 500, although retrying cannot help.
_UNTYPED: Final = "failed to create typed patch object"


def refusal(error: ApiException) -> RefusedError | None:
    """The API server's refusal of the object sent, as the error to raise; None when the answer is not
    about the object: the operator's own rights missing (which must stay loud: a fault of the install,
    retried, logged), the API server failing, a conflict.

    A 403 is the operator's when its authorizers refused it, and the object's when admission did: a
    quota (`exceeded quota: ...`), a ValidatingAdmissionPolicy (`ValidatingAdmissionPolicy '...' ...
    denied request: ...`), a webhook (`admission webhook "..." denied the request: ...`).
    """
    if error.status == HTTP_UNPROCESSABLE:
        return RejectedError(api_message(error))
    # The others only as the API server words them: a 403 with no Status of its own came from something
    # between the operator and the API server, and says nothing of the object.
    message = _status_message(error)
    if message is None:
        return None
    if error.status == HTTP_INTERNAL_ERROR and message.startswith(_UNTYPED):
        return RejectedError(message)
    if error.status == HTTP_FORBIDDEN and not _UNAUTHORIZED.search(message):
        return DeniedError(message)
    if error.status == HTTP_BAD_REQUEST and _WEBHOOK_DENIED.search(message):
        return DeniedError(message)
    return None


class NotThatObjectError(Exception):
    """The object of that name is not the one of the uid given (another took its place, or none is there)."""


class NamespaceTerminatingError(Exception):
    """The namespace is being deleted: nothing may be created in it, and what is in it goes with it."""


def namespace_terminating(error: ApiException) -> bool:
    # The API server's NamespaceLifecycle admission names this cause; any other 403 is a refusal to report.
    if error.status != HTTP_FORBIDDEN:
        return False
    try:
        causes = json.loads(error.body or "")["details"]["causes"]
    except (TypeError, ValueError, KeyError):
        return False
    return any(cause.get("reason") == "NamespaceTerminating" for cause in causes)


def apply(
    manifest: Mapping[str, Any], uid: str | None = None, *, manager: str = FIELD_MANAGER, force: bool = True
) -> dict[str, Any]:
    """Applies `manifest` (force: the operator owns these fields) and returns the live object.

    With `uid`, the API server applies only to the object of that uid (a precondition it checks):
    one request both proves the object is the one the caller knows and updates it. Raises
    NotThatObjectError when it is not (gone, or replaced by another of the same name).
    """
    meta = manifest["metadata"]
    checked(meta["name"], meta.get("namespace"))
    body = dict(manifest)
    if uid is not None:
        body["metadata"] = {**meta, "uid": uid}
    path = resource(manifest["apiVersion"], manifest["kind"]).path(name=meta["name"], namespace=meta.get("namespace"))
    try:
        return request(
            "PATCH",
            path,
            query=[("fieldManager", manager), ("force", "true" if force else "false")],
            body=body,
            content_type="application/apply-patch+yaml",
        )
    except ApiException as error:
        if namespace_terminating(error):
            raise NamespaceTerminatingError(api_message(error)) from None
        if uid is not None and _uid_refused(error):
            raise NotThatObjectError(api_message(error)) from None
        if refused := refusal(error):
            raise refused from None
        raise


def _uid_refused(error: ApiException) -> bool:
    # No object of the name: 409 "uid mismatch"; another object of the name: 422 on metadata.uid.
    return error.status == HTTP_CONFLICT or (
        error.status == HTTP_UNPROCESSABLE and "metadata.uid" in api_message(error)
    )


def api_message(error: ApiException) -> str:
    """What the API server said of a refusal (its Status's message), without the response's headers."""
    message = _status_message(error)
    return str(error.reason) if message is None else message


def _status_message(error: ApiException) -> str | None:
    try:
        return str(json.loads(error.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return None


def get(api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The live object, or None."""
    checked(name, namespace)
    try:
        return request("GET", resource(api_version, kind).path(name=name, namespace=namespace))
    except ApiException as error:
        if error.status == HTTP_NOT_FOUND:
            return None
        raise


def uids(api_version: str, kind: str, namespace: str | None, label_selector: str) -> set[str]:
    """The uids of the objects of a kind that `label_selector` picks, in `namespace` or (None) in every one.

    Read as metadata only (a PartialObjectMetadataList), a page at a time: a sweep of a thousand
    children then costs the API server and this process a fraction of their full bodies.
    """
    checked(None, namespace)
    path = resource(api_version, kind).path(namespace=namespace)
    selected = [("labelSelector", label_selector), ("limit", str(_PAGE))]
    found: set[str] = set()
    after = ""
    while True:
        query = [*selected, ("continue", after)] if after else selected
        page = request("GET", path, query=query, accept=_METADATA_LIST)
        found.update(item["metadata"]["uid"] for item in page.get("items") or ())
        after = page["metadata"].get("continue") or ""
        if not after:
            return found


def delete(api_version: str, kind: str, name: str, namespace: str, uid: str | None = None) -> bool:
    """Deletes the object (its dependents in the background); False when it was gone already, or when
    `uid` is given and the object of that name is another one."""
    checked(name, namespace)
    body: dict[str, Any] = {"propagationPolicy": "Background"}
    if uid is not None:
        body["preconditions"] = {"uid": uid}
    try:
        request("DELETE", resource(api_version, kind).path(name=name, namespace=namespace), body=body)
    except ApiException as error:
        if error.status in (HTTP_NOT_FOUND, HTTP_CONFLICT):
            return False
        raise
    return True


class ConflictError(Exception):
    """The object changed since it was read; read it again and recompute."""


def patch_status(
    api_version: str, kind: str, name: str, namespace: str, status: Mapping[str, Any], resource_version: str
) -> str | None:
    """A JSON merge patch of the status subresource, only if the object is still at `resource_version`.

    Status lists such as conditions are replaced whole by a merge patch, so a writer that read an
    older status would undo what another wrote since; the precondition turns that into a conflict.
    Returns the object's new resourceVersion; None when the object is gone (deleted while it was
    reconciled: nothing left to report on).
    """
    checked(name, namespace)
    path = resource(api_version, kind).subresources["status"].path(name=name, namespace=namespace)
    try:
        written = request(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER)],
            body={"metadata": {"resourceVersion": resource_version}, "status": dict(status)},
            content_type="application/merge-patch+json",
        )
    except ApiException as error:
        if error.status == HTTP_NOT_FOUND:
            return None
        if error.status == HTTP_CONFLICT:
            raise ConflictError(f"{kind} {namespace}/{name} changed since resourceVersion {resource_version}") from None
        raise
    return str(written["metadata"]["resourceVersion"])


def delete_owned(api_version: str, kind: str, name: str, namespace: str, owner_uid: str) -> bool:
    """Deletes the object if `owner_uid` controls it: one of the same name made by someone else stays.

    The delete is conditional on the uid read, so one made by someone else between the read and
    the delete stays too.
    """
    live = get(api_version, kind, name, namespace)
    if live is None:
        return False
    owners = live["metadata"].get("ownerReferences") or ()
    if not any(reference.get("uid") == owner_uid and reference.get("controller") for reference in owners):
        return False
    return delete(api_version, kind, name, namespace, uid=live["metadata"]["uid"])


def create(manifest: Mapping[str, Any]) -> bool:
    """Creates the object; False when one of that name exists already (the caller chose the name to mean
    that). A manifest with a generateName instead of a name gets a new name each time."""
    namespace = manifest["metadata"].get("namespace")
    checked(manifest["metadata"].get("name"), namespace)
    path = resource(manifest["apiVersion"], manifest["kind"]).path(namespace=namespace)
    try:
        request("POST", path, query=[("fieldManager", FIELD_MANAGER)], body=dict(manifest))
    except ApiException as error:
        if namespace_terminating(error):
            raise NamespaceTerminatingError(api_message(error)) from None
        if error.status == HTTP_CONFLICT:
            return False
        if refused := refusal(error):
            raise refused from None
        raise
    return True
