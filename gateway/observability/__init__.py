"""What the gateway tells its operators: JSON logs (``logs``), the access log
(``access``), and Prometheus metrics (``metrics``)."""
