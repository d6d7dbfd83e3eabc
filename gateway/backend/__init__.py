"""The Redis boundary: the only code that knows Redis' topology and clients.

``base`` says what the rest of the gateway may ask (the Backend protocol) and what it is
told (the Listener protocol); ``standalone`` is the one Redis server implementation, on
a pipelined read connection (``reads``), one pub/sub connection (``subscriber``) and
redis-py for the update script; ``connection`` is the RESP connection both build on.
Whatever goes wrong reaches callers as BackendUnavailable (Redis unreachable, slow, or
refusing a command: out of memory, no permission) or a ChangeRefused (the update script
said no), never a redis-py exception.
"""

from gateway.backend.base import Backend, Listener
from gateway.backend.standalone import StandaloneBackend

__all__ = ["Backend", "Listener", "StandaloneBackend"]
