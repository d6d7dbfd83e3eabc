"""Job status gateway: one URL per conversion job, JSON snapshot or live Server-Sent Events."""

from gateway.errors import (
    BackendUnavailable,
    ChangeRefused,
    GatewayError,
    InvalidTransition,
    InvalidUpdate,
    JobAlreadyExists,
    JobNotFound,
)
from gateway.worker import SyncWorker, Worker

__all__ = [
    "BackendUnavailable",
    "ChangeRefused",
    "GatewayError",
    "InvalidTransition",
    "InvalidUpdate",
    "JobAlreadyExists",
    "JobNotFound",
    "SyncWorker",
    "Worker",
]
