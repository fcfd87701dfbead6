"""The pure core: no I/O, no clock reads, no Kafka / ClickHouse / Faust / Prometheus imports."""
