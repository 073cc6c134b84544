"""Observability: metrics and their exposition, the health server, logs, trace context, spans."""
