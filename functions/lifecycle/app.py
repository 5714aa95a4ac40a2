"""Delete, restore and update (``admin`` keys): DELETE /o3-dpacs-wado/rs/studies/{STUDY}[/
series/{SERIES}[/instances/{INSTANCE}]], POST /o3-dpacs-wado/rs/restore/studies/... of the
same paths, GET /o3-dpacs-wado/iocm/rejected: what IOCM rejection notes named, POST
/o3-dpacs-wado/rs/studies/$bulkUpdate and GET /o3-dpacs-wado/operations/{id}: metadata
updates and patient merges (run by the Operations function), and GET
/o3-dpacs-wado/versions/studies/.../instances/{INSTANCE}[/{VERSION}]: the versions an update
kept (docs/conformance-statement.md, sections 12, 14 and 15).

A DELETE answers 204 once the target is gone, or 202 when its time ran out first (send the
same DELETE again: it goes on; the schedule goes on with it too); a restore answers 200
with what it stored again (202 likewise). On its schedule (EventBridge), the function goes
on with every deletion cut off before it was done (``lifecycle.finish_pending``), and with
every rejection note whose request ran out of time (``rejection.finish_pending``)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import bootstrap, deadline, http, keys, logs
from shared.dicomweb import uids
from shared.services import lifecycle, operations, rejection

logger = logs.get_logger()
archive = bootstrap.Provider()
app = http.make_resolver(archive, transaction="LIFECYCLE", scope=keys.ADMIN)
_STUDY = "/o3-dpacs-wado/rs/studies/<study>"
_SERIES = f"{_STUDY}/series/<series>"
_INSTANCE = f"{_SERIES}/instances/<instance>"
#: Restores mirror the DELETEs under rs/restore/: a POST under rs/studies/ is STOW's, and
#: the authorizer's policy for ``store`` keys opens every POST below it.
_RESTORE = "/o3-dpacs-wado/rs/restore"
#: Admins list what IOCM rejection notes named (shared.services.rejection); not under rs/,
#: whose GETs are the read scope's (one policy pattern for them all).
_REJECTED = "/o3-dpacs-wado/iocm/rejected"
#: Azure's update route; ``$`` is escaped for the resolver, whose routes are patterns.
_BULK_UPDATE = "/o3-dpacs-wado/rs/studies/\\$bulkUpdate"
_OPERATION = "/o3-dpacs-wado/operations/<operation>"
#: The versions updates kept: not under rs/ (whose GETs the read scope opens).
_VERSIONS = "/o3-dpacs-wado/versions/studies/<study>/series/<series>/instances/<instance>"
#: A kept version larger than this is answered by a redirect to a short-lived URL.
_INLINE_VERSION_BYTES = 4 << 20


@app.delete(_STUDY)
def delete_study(study: str) -> Response[str]:
    """Delete a study."""
    return _delete(study)


@app.delete(_SERIES)
def delete_series(study: str, series: str) -> Response[str]:
    """Delete a series."""
    return _delete(study, series)


@app.delete(_INSTANCE)
def delete_instance(study: str, series: str, instance: str) -> Response[str]:
    """Delete an instance."""
    return _delete(study, series, instance)


@app.post(f"{_RESTORE}/studies/<study>")
def restore_study(study: str) -> Response[str]:
    """Restore a deleted study (within the restore window)."""
    return _restore(study)


@app.post(f"{_RESTORE}/studies/<study>/series/<series>")
def restore_series(study: str, series: str) -> Response[str]:
    """Restore a deleted series."""
    return _restore(study, series)


@app.post(f"{_RESTORE}/studies/<study>/series/<series>/instances/<instance>")
def restore_instance(study: str, series: str, instance: str) -> Response[str]:
    """Restore a deleted instance."""
    return _restore(study, series, instance)


@app.get(f"{_REJECTED}")
def list_rejected() -> Response[str]:
    """Instances named by IOCM rejection notes (hidden, or to be hidden on arrival), a page
    at a time: ``?StudyInstanceUID=``, ``?limit=`` (1-1000), ``?after=`` (the ``next`` of
    the page before)."""
    query = app.current_event.query_string_parameters or {}
    page = rejection.Page.parse(
        study_uid=query.get("StudyInstanceUID"),
        after=query.get("after", ""),
        limit=query.get("limit"),
    )
    found, after = rejection.listing(
        archive().objects, page.study_uid, after=page.after, limit=page.limit
    )
    http.touched(app).add("instances", [r.sop_instance_uid for r in found])
    http.log_fields(app, listed=len(found))
    body = {"rejected": [r.as_json() for r in found], "next": after or None}
    return http.json_response(200, body, content_type="application/json")


@app.post(_BULK_UPDATE)
def bulk_update() -> Response[str]:
    """Ask for a metadata update of studies (Azure's ``$bulkUpdate``): 202 with the
    operation's id and the URL of its status."""
    current = archive()
    request = app.current_event
    operation = operations.submit(
        http.body_bytes(request),
        objects=current.objects,
        caller=operations.Caller(
            http.key_id(request), http.key_label(request), http.source_ip(request)
        ),
    )
    http.touched(app).add("studies", operation.studies)
    http.log_fields(app, studies=len(operation.studies), operation=operation.id)
    root = http.base_url(request, current.settings.base_path)
    href = f"{root}/operations/{operation.id}"
    answer = http.json_response(
        202, {"id": operation.id, "href": href}, content_type="application/json"
    )
    answer.headers["Location"] = href
    return answer


@app.get(_OPERATION)
def operation_status(operation: str) -> Response[str]:
    """An update operation's status: running, succeeded or failed, with its errors."""
    found = operations.status(operation, archive().objects)
    http.touched(app).add("studies", found.studies)
    return http.json_response(200, found.status_json(), content_type="application/json")


@app.get(_VERSIONS)
def list_versions(study: str, series: str, instance: str) -> Response[str]:
    """The versions of an instance: the current one, then those updates replaced."""
    current = archive()
    target = _target(study, series, instance)
    found = operations.versions(
        target.study_uid,
        str(target.series_uid),
        str(target.sop_instance_uid),
        objects=current.objects,
        catalog=current.catalog,
    )
    http.touched(app).add("instances", [str(target.sop_instance_uid)])
    return http.json_response(
        200, {"versions": [v.as_json() for v in found]}, content_type="application/json"
    )


@app.get(f"{_VERSIONS}/<version>")
def read_version(study: str, series: str, instance: str, version: str) -> Response[Any]:
    """A kept version's Part 10 bytes, as received or as the update before wrote them."""
    current = archive()
    target = _target(study, series, instance)
    key = operations.version_object(
        target.study_uid,
        str(target.series_uid),
        str(target.sop_instance_uid),
        version,
        objects=current.objects,
    )
    http.touched(app).add("instances", [str(target.sop_instance_uid)])
    info = current.objects.stat(key)
    name = f"{target.sop_instance_uid}.{version[:12]}.dcm"
    if info is not None and info.size > _INLINE_VERSION_BYTES:
        url = current.objects.presign_get(
            key, expires=300, content_type="application/dicom", filename=name
        )
        return Response(status_code=303, body="", headers={"Location": url})
    return http.binary_response(
        current.objects.get(key),
        "application/dicom",
        {"Content-Disposition": f'attachment; filename="{name}"', "ETag": f'"{version}"'},
    )


def _target(study: str, series: str | None, instance: str | None) -> lifecycle.Target:
    return lifecycle.Target(
        str(uids.path_uid(study)), uids.path_uid(series), uids.path_uid(instance)
    )


def _delete(study: str, series: str | None = None, instance: str | None = None) -> Response[str]:
    current = archive()
    target = _target(study, series, instance)
    deletion = lifecycle.delete(
        target,
        objects=current.objects,
        index=current.index,
        retention_days=current.settings.deleted_retention_days,
        deadline=deadline.from_context(app.lambda_context),
        catalog=current.catalog,
    )
    touched = http.touched(app)
    touched.add("series", sorted({e.series_uid for e in deletion.removed}))
    touched.add("instances", deletion.instances)
    for entry in deletion.removed:  # the version each deleted instance ends
        touched.version(entry.sop_instance_uid, entry.sha256, "")
    http.count(app, "InstancesDeleted", len(deletion.removed))
    http.log_fields(app, level=target.level, removed=len(deletion.removed), swept=deletion.swept)
    if deletion.done:
        return Response(status_code=204, body="")
    pending = http.json_response(
        202,
        {
            "status": "pending",
            "removed": len(deletion.removed),
            "moved": deletion.swept,
            "message": "not finished in the time of one request: send the same DELETE again"
            " (the archive also goes on with it within 15 minutes)",
        },
        content_type="application/json",
    )
    pending.headers["Retry-After"] = "1"
    return pending


def _restore(study: str, series: str | None = None, instance: str | None = None) -> Response[str]:
    current = archive()
    request = app.current_event
    target = _target(study, series, instance)
    result = lifecycle.restore(
        target,
        objects=current.objects,
        index=current.index,
        calling_aet=current.settings.default_calling_aet,
        base_url=http.base_url(request, current.settings.base_path),
        deadline=deadline.from_context(app.lambda_context),
    )
    touched = http.touched(app)
    touched.add("instances", result.restored)
    for sop, version in result.versions.items():  # the version each restore begins again
        touched.version(sop, "", version)
    http.count(app, "InstancesRestored", len(result.restored))
    http.log_fields(
        app, level=target.level, restored=len(result.restored), conflicts=len(result.conflicts)
    )
    if not result.done:
        status = 202
    elif not result.restored and not result.already and result.conflicts:
        status = 409
    else:
        status = 200
    return http.json_response(status, result.as_json(), content_type="application/json")


def _finish_pending(context: Any) -> dict[str, Any]:
    current = archive()
    with logs.line(logger, "lifecycle", transaction="lifecycle-schedule") as fields:
        until = deadline.from_context(context)
        counts = lifecycle.finish_pending(
            objects=current.objects,
            index=current.index,
            retention_days=current.settings.deleted_retention_days,
            deadline=until,
            catalog=current.catalog,
        )
        notes = rejection.finish_pending(
            objects=current.objects,
            index=current.index,
            retention_days=current.settings.deleted_retention_days,
            deadline=until,
            catalog=lambda: current.catalog,
        )
        counts |= {f"notes_{k}": v for k, v in notes.items()}
        fields.update(counts)
    return counts


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: an API request, or the schedule."""
    if event.get("detail-type") == "Scheduled Event":
        return _finish_pending(context)
    return app.resolve(event, context)
