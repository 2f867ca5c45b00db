"""Prometheus metrics of the gateway (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INTAKE_TOTAL = Counter(
    "lapor_intake_total", "Messages handed to the intake, by channel and outcome",
    ["channel", "outcome"],
)
INTAKE_LATENCY = Histogram(
    "lapor_intake_seconds", "Time from submit to durable (normalise + outbox commit)",
    ["channel"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
OUTBOX_DEPTH = Gauge("lapor_outbox_pending", "Outbox entries without a receipt")
OUTBOX_AGE = Gauge("lapor_outbox_oldest_seconds", "Age of the oldest entry without a receipt")
# Counters kept by the forwarder's loops (which may not import this module), copied at scrape.
PUBLISHED = Gauge("lapor_published", "Outbox entries Kafka accepted since start")
RECEIPTS = Gauge("lapor_receipts_delivered", "Outbox entries marked delivered since start")
SINK_RECORDS = Gauge("lapor_sink_records", "Records the sink handled since start")
SINK_DEAD_LETTERS = Gauge("lapor_sink_dead_letters", "Records the sink dead-lettered since start")
BROKER_RESTARTS = Gauge("lapor_embedded_broker_restarts", "Restarts of the embedded broker")
# The complaint lifecycle (issue #8): complaints whose SLA clock ran out, by stage.
SLA_OVERDUE = Gauge("lapor_sla_overdue", "Complaints past an SLA due date, by stage", ["stage"])
