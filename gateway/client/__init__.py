"""The Python client: follow one job, many jobs or a tenant; wait for a job to finish.

It talks HTTP to a gateway (httpx, httpx-sse) and never imports the server's code; what
it shares with the server is the contract (gateway.contract).
"""

from gateway.client._client import (
    AsyncClient,
    Client,
    ClientError,
    ErrorInfo,
    Job,
    JobDidNotComplete,
    JobEvent,
    NotFound,
    Output,
    Progress,
    Unauthorized,
    Unreachable,
    WaitTimeout,
)

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ErrorInfo",
    "Job",
    "JobDidNotComplete",
    "JobEvent",
    "NotFound",
    "Output",
    "Progress",
    "Unauthorized",
    "Unreachable",
    "WaitTimeout",
]
