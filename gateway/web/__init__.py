"""HTTP: the one request path (``front``), the route table (``routes``), the request
context (``context``), negotiation and parameters, error bodies (``problems``), and one
module per endpoint: ``job`` (/v1/jobs/{id}), ``jobs`` (/v1/jobs), ``actions`` (cancel,
delete, download), ``service`` (health, readiness, metrics), with the two event streams
in ``streams`` and ``multistream``."""
