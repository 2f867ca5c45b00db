"""Fixtures on real services: PostgreSQL (one database per test), a tansu broker, and the
Telegram Bot API emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forwarder.db import Database, open_database
from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import BrokerProcess, PgDatabase, kafka_env_for, running_broker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


broker = pytest.fixture(scope="session")(running_broker)


@pytest.fixture
async def pg() -> AsyncIterator[PgDatabase]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    database = PgDatabase()
    await database.create()
    yield database
    await database.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty store: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/lapor.db"
        return
    database = PgDatabase()
    await database.create()
    yield database.url
    await database.drop()


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    """That store opened and migrated, on both backends (a module may override ``db``)."""
    database = await open_database(store_url, pool_size=4)
    yield database
    await database.close()


@pytest.fixture
def kafka_env(broker: BrokerProcess) -> dict[str, str]:
    """Environment that points a gateway at the shared broker with this test's own topics."""
    return kafka_env_for(broker.bootstrap)


@pytest.fixture
async def bot_api() -> AsyncIterator[TelegramEmulator]:
    """A Telegram Bot API emulator on a loopback port."""
    emulator = TelegramEmulator()
    await emulator.start()
    yield emulator
    await emulator.close()
