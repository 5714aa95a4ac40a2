"""STOW-RS: POST /o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies[/{STUDY_UID}], and
POST /o3-dpacs-wado/rs/studies[/{STUDY}] beside QIDO-RS and WADO-RS for clients that take one
base URL (the calling AE recorded is the DefaultCallingAet parameter)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import bootstrap, budget, deadline, http, keys, logs
from shared.dicomweb import stow_request
from shared.services import store

logger = logs.get_logger()
archive = bootstrap.Provider()
app = http.make_resolver(archive, transaction="STOW-RS", scope=keys.STORE)


@app.post("/o3-dpacs-wado/stowRsListener/<calling_aet>/studies")
def store_instances(calling_aet: str) -> Response[str]:
    """Store instances of any studies."""
    return _store(calling_aet, None)


@app.post("/o3-dpacs-wado/stowRsListener/<calling_aet>/studies/<study_uid>")
def store_study_instances(calling_aet: str, study_uid: str) -> Response[str]:
    """Store instances of one study; others fail with 0xC409."""
    return _store(calling_aet, stow_request.study_uid_from_path(study_uid))


@app.post("/o3-dpacs-wado/rs/studies")
def store_instances_at_root() -> Response[str]:
    """Store instances of any studies, at the root QIDO-RS and WADO-RS share."""
    return _store(archive().settings.default_calling_aet, None)


@app.post("/o3-dpacs-wado/rs/studies/<study_uid>")
def store_study_instances_at_root(study_uid: str) -> Response[str]:
    """Store instances of one study, at the root QIDO-RS and WADO-RS share."""
    return _store(
        archive().settings.default_calling_aet, stow_request.study_uid_from_path(study_uid)
    )


def _store(calling_aet: str, study_uid: str | None) -> Response[str]:
    request = app.current_event
    current = archive()
    parts = stow_request.parse(
        content_type=http.header(request, "content-type"),
        accept=http.header(request, "accept"),
        body=http.body_bytes(request),
        inline_limit=current.settings.inline_limit,
    )
    stow = store.StoreRequest(
        parts=parts,
        calling_aet=stow_request.calling_aet(calling_aet),
        base_url=http.base_url(request, current.settings.base_path),
        study_uid=study_uid,
        memory_budget=budget.from_context(app.lambda_context),
        deadline=deadline.from_context(app.lambda_context),
        retention_days=current.settings.deleted_retention_days,
    )
    result = store.store(
        stow, objects=current.objects, index=current.index, catalog=lambda: current.catalog
    )
    touched = http.touched(app)
    touched.add("studies", [s.study_uid for s in result.stored])
    touched.add("instances", [s.sop_instance_uid for s in result.stored])
    rejected = [uid for s in result.stored for uid in s.rejected]
    touched.add("instances", rejected)  # named by rejection notes: hidden now or on arrival
    for sop, version in (h for s in result.stored for h in s.hid):  # the versions hidden
        touched.version(sop, version, "")
    http.count(app, "InstancesRejected", len(rejected))
    http.count(app, "InstancesStored", len(result.stored))
    http.count(app, "InstancesFailed", len(result.failed))
    http.log_fields(
        app,
        instances=len(parts),
        stored=len(result.stored),
        failed=len(result.failed),
        failure_reasons=sorted({hex(f.reason) for f in result.failed}),
        rejected=len(rejected),
        hidden=sum(s.hidden for s in result.stored),
        bytes=sum(len(p.content) for p in parts),
    )
    return http.json_response(result.status, result.to_json())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
