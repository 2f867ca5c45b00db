"""Kafka plumbing without a broker: partitioning and CloudEvents headers."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

import forwarder.kafka as kafka
from forwarder.kafka import CE_TYPE_RECEIPT, _KeyHashCache, cloudevent_headers


@pytest.mark.parametrize("count", [1, 2, 6, 7])
def test_keys_land_where_any_kafka_client_puts_them(count: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "KEY_HASH_CACHE", 50)  # the cache fills and starts over
    partitions = list(range(count))
    cached = _KeyHashCache()
    keys = [f"{i:032x}".encode() for i in range(200)]
    for key in keys + keys:  # the second round is answered from the cache
        assert cached(key, partitions, partitions) == DefaultPartitioner()(key, partitions,
                                                                            partitions)
    assert cached(None, partitions, partitions[:1]) == 0  # no key: an available partition


def test_cloudevent_headers_carry_a_fresh_id_unless_given() -> None:
    first = dict(cloudevent_headers(CE_TYPE_RECEIPT, "gw", time=b"t", subject="s"))
    second = dict(cloudevent_headers(CE_TYPE_RECEIPT, "gw", time=b"t", subject="s"))
    assert first["ce_id"] != second["ce_id"] and len(first["ce_id"]) == 32
    assert {k: v for k, v in first.items() if k != "ce_id"} == {
        "ce_specversion": b"1.0", "ce_source": b"gw", "ce_type": CE_TYPE_RECEIPT.encode(),
        "ce_time": b"t", "content-type": b"application/json", "ce_subject": b"s"}
    given = cloudevent_headers(CE_TYPE_RECEIPT, "gw", ce_id="abc", time=b"t")
    assert [k for k, _ in given][:6] == ["ce_specversion", "ce_id", "ce_source", "ce_type",
                                         "ce_time", "content-type"]
    assert dict(given)["ce_id"] == b"abc"
