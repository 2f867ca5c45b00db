"""Fixtures on real services: PostgreSQL (one database per test) and a tansu broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.integration.support import BrokerProcess, PgDatabase


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerProcess]:
    """One broker for the session; tests isolate themselves with topic prefixes."""
    process = BrokerProcess()
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def pg() -> AsyncIterator[PgDatabase]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    database = PgDatabase()
    await database.create()
    yield database
    await database.drop()


@pytest.fixture
def kafka_env(broker: BrokerProcess) -> dict[str, str]:
    """Environment that points a gateway at the shared broker with this test's own topics."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    return {
        "LAPOR_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "LAPOR_KAFKA__TOPIC_PREFIX": prefix,
        "LAPOR_KAFKA__SINK_GROUP": f"{prefix}sink",
        "LAPOR_KAFKA__RECEIPTS_GROUP": f"{prefix}receipts",
        "LAPOR_KAFKA__PARTITIONS": "3",
        # tansu refuses InitProducerId (docs/CHANNELS.md section 6).
        "LAPOR_KAFKA__ENABLE_IDEMPOTENCE": "false",
        "LAPOR_KAFKA__RECEIPT_TIMEOUT_S": "3",
    }
