"""Exceptions that the worker library, the Redis boundary and the client raise."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error this package raises on purpose."""


class BackendUnavailable(GatewayError):
    """Redis did not answer in time; a request gets 503 (docs/api.md)."""


class ChangeRefused(GatewayError):
    """The update script refused a change; nothing was written."""

    code = "refused"

    def __init__(self, job_id: str, op: str, message: str, status: str | None) -> None:
        self.job_id = job_id
        self.op = op
        self.status = status
        detail = f" (status: {status})" if status else ""
        super().__init__(f"{op} of job {job_id!r} refused: {message}{detail}")


class JobNotFound(ChangeRefused):
    code = "not_found"


class JobAlreadyExists(ChangeRefused):
    code = "already_exists"


class InvalidTransition(ChangeRefused):
    """The job's current status does not allow the change (for example a terminal one)."""

    code = "invalid_transition"


class InvalidUpdate(ChangeRefused):
    """The change itself is malformed: an unknown field, a percent out of range, ..."""

    code = "invalid_argument"


REFUSALS: dict[str, type[ChangeRefused]] = {
    cls.code: cls for cls in (JobNotFound, JobAlreadyExists, InvalidTransition, InvalidUpdate)
}
