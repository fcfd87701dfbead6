"""Metrics: the bounded state behind the Prometheus series of the metrics role."""
