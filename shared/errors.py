"""One exception hierarchy; each class carries the HTTP status it maps to.

Messages are written for clients: they never contain internals or patient data.
"""

from __future__ import annotations


class DicomWebError(Exception):
    """A request the service refuses, with a status and a client-safe message."""

    status = 400
    #: Seconds a client should wait before retrying (a ``Retry-After`` header), when set.
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(DicomWebError):
    status = 400


class Forbidden(DicomWebError):
    status = 403


class NotFound(DicomWebError):
    status = 404


class NotAcceptable(DicomWebError):
    status = 406


class Conflict(DicomWebError):
    status = 409


class PayloadTooLarge(DicomWebError):
    status = 413


class UnsupportedMediaType(DicomWebError):
    status = 415


class StorageUnavailable(DicomWebError):
    """A storage dependency failed or throttled; the client may retry."""

    status = 503


class OutOfTime(DicomWebError):
    """The request would not finish before API Gateway's timeout (``shared.deadline``)."""

    status = 503
    retry_after = 5
