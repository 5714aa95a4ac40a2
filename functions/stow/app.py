"""STOW-RS: POST /o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies[/{STUDY_UID}], and
POST /o3-dpacs-wado/rs/studies[/{STUDY}] beside QIDO-RS and WADO-RS for clients that take one
base URL (the calling AE recorded is the DefaultCallingAet parameter)."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import budget, config, deadline, http, keys, logs, wiring
from shared.dicomweb import paths, stow_request
from shared.services import store

logger = logs.get_logger()
app = http.make_resolver(scope=keys.STORE, transaction="STOW-RS")


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
    return _store(config.settings().default_calling_aet, None)


@app.post("/o3-dpacs-wado/rs/studies/<study_uid>")
def store_study_instances_at_root(study_uid: str) -> Response[str]:
    """Store instances of one study, at the root QIDO-RS and WADO-RS share."""
    return _store(
        config.settings().default_calling_aet, stow_request.study_uid_from_path(study_uid)
    )


def _store(calling_aet: str, study_uid: str | None) -> Response[str]:
    started = time.perf_counter()
    event = app.current_event.raw_event
    settings = config.settings()
    parts = stow_request.parse(
        content_type=http.header(event, "content-type"),
        accept=http.header(event, "accept"),
        body=http.body_bytes(event),
        inline_limit=settings.inline_limit,
    )
    request = store.StoreRequest(
        parts=parts,
        calling_aet=stow_request.calling_aet(calling_aet),
        base_url=paths.base_url(event, settings.base_path),
        study_uid=study_uid,
        memory_budget=budget.from_context(app.lambda_context),
        deadline=deadline.from_context(app.lambda_context),
    )
    result = store.store(request, objects=wiring.blobs(), index=wiring.index())
    touched = http.touched(app)
    touched.add("studies", [s.study_uid for s in result.stored])
    touched.add("instances", [s.sop_instance_uid for s in result.stored])
    http.count(app, "InstancesStored", len(result.stored))
    http.count(app, "InstancesFailed", len(result.failed))
    logger.info(
        "stow",
        extra={
            "transaction": "STOW-RS",
            "instances": len(parts),
            "stored": len(result.stored),
            "failed": len(result.failed),
            "failure_reasons": sorted({hex(f.reason) for f in result.failed}),
            "bytes": sum(len(p.content) for p in parts),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "outcome": result.status,
        },
    )
    return http.json_response(result.status, result.to_json())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
