"""Per-transaction metrics in CloudWatch's Embedded Metric Format (Powertools).

One EMF document per request, on stdout: CloudWatch Logs turns it into metrics of the
``DICOMweb`` namespace, dimension ``Transaction`` (STOW-RS, QIDO-RS, WADO-RS, WADO-URI,
uploads): ``Requests``, ``Latency`` (ms), ``BytesOut``, and, when the handler counted them,
``InstancesStored`` and ``InstancesFailed``. A request answered 4xx or 5xx adds a
``Failures`` metric with a second dimension, ``Reason`` (the HTTP status). The template's
dashboard and alarms read them (docs/operations.md). No patient data: names and numbers only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

NAMESPACE = "DICOMweb"
#: Counts a handler may add (app context ``metrics``), with their units.
COUNTS = {"InstancesStored": MetricUnit.Count, "InstancesFailed": MetricUnit.Count}


def documents(
    transaction: str,
    *,
    status: int,
    duration_ms: float,
    size: int,
    counts: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """The EMF documents of one request (one, or two for a failure)."""
    request = EphemeralMetrics(namespace=NAMESPACE, service="dicomweb")
    request.add_dimension("Transaction", transaction)
    request.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    request.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=duration_ms)
    request.add_metric(name="BytesOut", unit=MetricUnit.Bytes, value=size)
    for name, value in (counts or {}).items():
        if name in COUNTS:
            request.add_metric(name=name, unit=COUNTS[name], value=value)
    found: list[dict[str, Any]] = [dict(request.serialize_metric_set())]
    if status >= 400:
        failure = EphemeralMetrics(namespace=NAMESPACE, service="dicomweb")
        failure.add_dimension("Transaction", transaction)
        failure.add_dimension("Reason", str(status))
        failure.add_metric(name="Failures", unit=MetricUnit.Count, value=1)
        found.append(dict(failure.serialize_metric_set()))
    return found


def emit(documents_: list[dict[str, Any]]) -> None:
    """Write EMF documents to stdout (Lambda sends stdout to CloudWatch Logs), unless
    ``POWERTOOLS_METRICS_DISABLED`` is true (the local stack: no CloudWatch to read them)."""
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
        return
    for document in documents_:
        sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
    sys.stdout.flush()
