"""What the gateway tells its operators: JSON logs and the access log (``logs``), and
Prometheus metrics (``metrics``)."""
