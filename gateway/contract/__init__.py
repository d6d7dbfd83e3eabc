"""The contract, as code: what workers, Redis, the gateway and its clients agree on.

Pure, no I/O: key and channel names and the job id rule (``keys``), a job as stored
(``record``), the channel message and its events (``events``), the SSE bytes and ASGI
bodies a stream is made of (``frames``), and the calls of the update script
(``script`` and ``update.lua``): what docs/api.md ("The job snapshot", "Event streams")
and docs/workers.md describe.
"""
