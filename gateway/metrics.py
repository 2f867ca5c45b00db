"""Prometheus metrics of the gateway (served at ``/metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors.base import BaseConnector

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

# --------------------------------------------------------------------------- operations
# Per-connector counters come from each connector's health at scrape time (OPS_COLLECTOR);
# the rest is set by the /metrics handler from the ops service, or observed where it happens.

KAFKA_PRODUCE_LATENCY = Histogram(
    "lapor_kafka_produce_seconds", "Time until Kafka acknowledged a batch (acks=all), by topic",
    ["topic"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
KAFKA_PRODUCE_ERRORS = Counter(
    "lapor_kafka_produce_errors_total", "Records Kafka did not acknowledge, by topic", ["topic"],
)
STORE_WRITES = Gauge("lapor_store_writes", "Complaint records the sink wrote since start")
CONSUMER_LAG = Gauge(
    "lapor_consumer_lag", "Records not yet consumed, by consumer group", ["group"],
)
REPLIES = Gauge("lapor_replies", "Replies owed to citizens, by state", ["state"])
DEAD_LETTERS = Gauge("lapor_dead_letters", "Dead letters not (successfully) replayed")
ALERTS_OPEN = Gauge("lapor_alerts_open", "Alerts raised and not resolved")
CONNECTOR_BACKLOG = Gauge(
    "lapor_connector_backlog", "Outbox entries without a receipt, by connector", ["connector"],
)
CONNECTOR_OUTCOMES = ("received", "accepted", "duplicates", "rejected", "errors", "dead_letters")


class ConnectorCollector(Collector):
    """``lapor_connector_messages_total{connector,outcome}`` and ``lapor_connector_up``
    (1 when running), read from the connectors registered by the running app."""

    def __init__(self) -> None:
        self.connectors: Callable[[], list[BaseConnector]] = list

    def collect(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "lapor_connector_messages", "Messages per connector, by outcome",
            labels=["connector", "outcome"])
        state = GaugeMetricFamily("lapor_connector_state",
                                  "1 for the connector's current state", labels=["connector",
                                                                                "state"])
        for connector in self.connectors():
            health = connector.health()
            for outcome in CONNECTOR_OUTCOMES:
                messages.add_metric([connector.name, outcome],
                                    health.counters.get(outcome, 0))
            state.add_metric([connector.name, health.state.value], 1)
        yield messages
        yield state


OPS_COLLECTOR = ConnectorCollector()
REGISTRY.register(OPS_COLLECTOR)
