"""The publisher on a real broker: new entries come handed over by the outbox (no claim), what
is due in the table is still claimed while they keep coming, and every publish is recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from forwarder.db import open_database
from forwarder.outbox import Outbox
from forwarder.publisher import Publisher
from tests.integration.support import BrokerProcess, own_topics, wait_for
from tests.integration.test_sink import _read_all
from tests.integration.test_stores import _complaint


class CountingOutbox(Outbox):
    """The outbox, counting claims from the table."""

    claims = 0

    async def claim_due(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        self.claims += 1
        return await super().claim_due(*args, **kwargs)  # type: ignore[arg-type]


async def test_new_entries_are_published_without_claims_and_due_ones_are_not_starved(
        tmp_path: Path, broker: BrokerProcess) -> None:
    settings, topics, producer = await own_topics(broker, "p")
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    try:
        async with CountingOutbox(db) as outbox:
            # An entry already in the table, due now (as after a failed send).
            waiting = await outbox.add(_complaint("due-0"), b"", "x")
            publisher = Publisher(outbox=outbox, producer=producer, topics=topics,
                                  settings=settings, source="test")
            await publisher.start()
            try:
                added = [waiting.complaint_id]
                for i in range(40):  # new entries keep coming
                    added.append((await outbox.add(_complaint(f"new-{i}"), b"", "x")).complaint_id)
                    await asyncio.sleep(0.02)
                records = await _read_all(broker.bootstrap, topics.complaints, len(added))

                async def all_recorded() -> bool:
                    rows = await db.fetch("SELECT COUNT(*) FROM outbox WHERE published_us IS NULL")
                    return rows[0][0] == 0

                await wait_for(all_recorded, within=20, what="every publish recorded")
            finally:
                await publisher.stop()
            claims = outbox.claims
    finally:
        await producer.stop()
        await db.close()
    assert {r.key.decode() for r in records} == set(added)  # type: ignore[attr-defined]
    # The table is claimed from about once a second (DUE_POLL_S), not once per group commit:
    # 41 entries over about a second and the waits for the records took a few claims.
    assert 1 <= claims <= 6, claims
