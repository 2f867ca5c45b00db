"""The X connector through tweepy against the HTTPS emulator (session swapped, CHANNELS.md 4.2)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from config.x import XSettings
from connectors.base import ConnectorState, ReplyTarget
from connectors.testing import FakeIntake
from connectors.x import XConnector
from errors import ChannelRejected, ChannelUnavailable, StoreUnavailable, retry_policy
from gateway.replies import ack_text
from normalizer.ids import complaint_id
from tests.emulators.x_api import EmulatedXApi
from tests.integration.support import wait_for

OURS = "1708000001"
CITIZEN = "55501"
OTHER = "55502"
CURSOR = f"x:{OURS}:mentions:since_id"


@pytest.fixture
async def api() -> AsyncIterator[EmulatedXApi]:
    emulator = EmulatedXApi(me=OURS)
    emulator.add_user(OURS, "LAPOR1708", "LAPOR!")
    emulator.add_user(CITIZEN, "warga_smd", "Warga Samarinda")
    emulator.add_user(OTHER, "pemkot", "Pemkot")
    await emulator.start()
    yield emulator
    await emulator.stop()


def settings(**extra: Any) -> XSettings:
    base: dict[str, Any] = {
        "enabled": True, "bearer_token": SecretStr("bearer-test-token"), "user_id": OURS,
        "poll_interval_s": 0.2, "max_results": 5, "reply_mode": "tweet",
        "consumer_key": SecretStr("ck"), "consumer_secret": SecretStr("cs"),
        "access_token": SecretStr("at"), "access_token_secret": SecretStr("ats")}
    base.update(extra)
    return XSettings(**base)


def connector(api: EmulatedXApi, **extra: Any) -> XConnector:
    return XConnector(settings(**extra), public_url=None, session_factory=api.session)


def mention(api: EmulatedXApi, text: str, author: str = CITIZEN, **kw: Any) -> str:
    return api.add_tweet(f"@LAPOR1708 {text}", author, mentions=(OURS,), **kw)


async def until(intake: FakeIntake, count: int, within: float = 20) -> None:
    async def enough() -> bool:
        return len(intake.messages) >= count

    await wait_for(enough, within=within, what=f"{count} complaints")


async def test_mentions_are_paged_and_submitted_oldest_first(api: EmulatedXApi) -> None:
    ids = [mention(api, f"Jalan rusak nomor {i}") for i in range(12)]
    api.add_tweet("tidak menyebut kami", CITIZEN)
    intake = FakeIntake()
    x = connector(api)
    await x.start(intake)
    try:
        await until(intake, 12)

        async def polled_since_newest() -> bool:
            return intake.cursors.get(CURSOR) == ids[-1] and any(
                q.get("since_id") == ids[-1] for _, q in api.requests)

        await wait_for(polled_since_newest, within=10, what="a poll with the saved since_id")
    finally:
        await x.stop()
    assert [raw.native_id for raw in intake.messages.values()] == ids  # oldest first
    first = list(intake.messages.values())[0]
    assert first.text == "Jalan rusak nomor 0"
    assert first.sender.handle == "@warga_smd" and first.sender.channel_user_id == CITIZEN
    assert first.account == OURS and first.channel == "x"
    assert first.reply_hints == {"tweet_id": ids[0], "author_id": CITIZEN}
    assert first.sent_at is not None
    paged = [q for kind, q in api.requests if kind == "mentions" and "pagination_token" in q]
    assert [q["pagination_token"] for q in paged[:2]] == ["tok5", "tok10"]
    first_request = api.requests[0][1]
    assert set(first_request["expansions"].split(",")) >= {
        "author_id", "attachments.media_keys", "geo.place_id"}
    assert set(first_request["tweet.fields"].split(",")) >= {
        "created_at", "conversation_id", "referenced_tweets", "lang"}


async def test_restart_after_a_store_failure_loses_nothing_and_duplicates_nothing(
        api: EmulatedXApi) -> None:
    ids = [mention(api, f"Sampah menumpuk {i}") for i in range(8)]
    intake = FakeIntake()
    first = connector(api, poll_interval_s=30)
    # The store fails on the 4th tweet: 3 are durable, the cursor must stop at the 3rd.
    real_submit = intake.submit
    calls = {"n": 0}

    async def flaky(raw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise StoreUnavailable("disk full")
        return await real_submit(raw)

    intake.submit = flaky  # type: ignore[method-assign]
    await first.start(intake)
    try:
        async def degraded() -> bool:
            return first.health().state is ConnectorState.DEGRADED

        await wait_for(degraded, within=10, what="the failed poll")
    finally:
        await first.stop()
    assert len(intake.messages) == 3
    assert intake.cursors[CURSOR] == ids[2]
    intake.submit = real_submit  # type: ignore[method-assign]
    later = [mention(api, f"Lampu padam {i}") for i in range(3)]
    second = connector(api)  # the gateway restarted
    await second.start(intake)
    try:
        await until(intake, 11)

        async def caught_up() -> bool:
            return intake.cursors.get(CURSOR) == later[-1]

        await wait_for(caught_up, within=10, what="cursor at the newest mention")
    finally:
        await second.stop()
    assert [raw.native_id for raw in intake.messages.values()] == ids + later
    assert second.health().counters.get("duplicates", 0) == 0
    restarted = [q for kind, q in api.requests if kind == "mentions"]
    assert any(q.get("since_id") == ids[2] for q in restarted)


async def test_rate_limit_is_obeyed_and_does_not_block_stop(api: EmulatedXApi) -> None:
    mention(api, "Banjir di Jl. Pemuda")
    api.fail_next["mentions"] = [429]
    api.reset_in = 2
    intake = FakeIntake()
    x = connector(api)
    started = time.time()
    await x.start(intake)
    try:
        await until(intake, 1)
    finally:
        await x.stop()
    assert time.time() - started >= 1.0  # waited for x-rate-limit-reset, not poll_interval
    assert "rate limited" in (x.health().last_error or "")
    # A long reset: stop() still returns at once.
    api.fail_next["mentions"] = [429]
    api.reset_in = 600
    x = connector(api)
    await x.start(FakeIntake())

    async def limited() -> bool:
        return x.health().state is ConnectorState.DEGRADED

    await wait_for(limited, within=10, what="the 429")
    before = time.monotonic()
    await x.stop()
    assert time.monotonic() - before < 2.0


async def test_server_errors_are_retried(api: EmulatedXApi) -> None:
    mention(api, "Pungli di kelurahan")
    api.fail_next["mentions"] = [503]
    intake = FakeIntake()
    x = connector(api)
    # The first backoff after a failure is FIRST_BACKOFF_S (5 s).
    await x.start(intake)
    try:
        await until(intake, 1, within=30)
    finally:
        await x.stop()
    assert x.health().counters["errors"] == 1
    assert x.health().state is not ConnectorState.DEGRADED


async def test_hashtag_search_and_mentions_are_one_complaint_each(api: EmulatedXApi) -> None:
    both = mention(api, "Drainase tersumbat #lapor")
    only_tag = api.add_tweet("Pohon tumbang #LAPOR mohon ditangani", OTHER)
    intake = FakeIntake()
    x = connector(api, hashtag="#lapor", max_results=10)  # X's search needs at least 10
    await x.start(intake)
    try:
        await until(intake, 2)

        async def both_cursors() -> bool:
            return len(intake.cursors) == 2

        await wait_for(both_cursors, within=10, what="both cursors")
    finally:
        await x.stop()
    assert sorted(raw.native_id for raw in intake.messages.values()) == sorted([both, only_tag])
    assert any(kind == "search" and q["query"] == "#lapor -is:retweet"
               for kind, q in api.requests)


async def test_media_place_and_follow_up_to_our_reply(api: EmulatedXApi) -> None:
    first = mention(
        api, "Jembatan retak",
        media=({"media_key": "3_1", "type": "photo", "url": "https://pbs.twimg.com/m/1.jpg"},),
        place={"id": "pl1", "full_name": "Samarinda, Kalimantan Timur",
               "geo": {"bbox": [117.0, -0.6, 117.3, -0.4]}})
    intake = FakeIntake()
    x = connector(api)
    await x.start(intake)
    try:
        await until(intake, 1)
        [cid] = intake.messages
        target = ReplyTarget(complaint_id=cid, tracking_code="ABCDE-12345", channel="x",
                             account=OURS, native_id=first, address=CITIZEN,
                             hints={"tweet_id": first, "author_id": CITIZEN})
        our_reply = await x.send_reply(target, ack_text("ABCDE-12345", None))
        assert our_reply is not None
        follow = api.add_tweet("@warga_smd @LAPOR1708 sudah seminggu belum diperbaiki", CITIZEN,
                               mentions=(OURS,), in_reply_to=our_reply)
        stranger = api.add_tweet("@LAPOR1708 di sini juga", OTHER, mentions=(OURS,),
                                 in_reply_to=our_reply)
        await until(intake, 3)
    finally:
        await x.stop()
    raw = intake.messages[cid]
    assert raw.location is not None and raw.location.text == "Samarinda, Kalimantan Timur"
    assert raw.location.lat == pytest.approx(-0.5) and raw.location.lon == pytest.approx(117.15)
    [attachment] = raw.attachments
    assert attachment.state == "pending" and attachment.storage_ref == \
        "https://pbs.twimg.com/m/1.jpg"
    follow_raw = intake.messages[complaint_id("x", OURS, follow)]
    assert follow_raw.thread_of == cid
    assert follow_raw.text == "@warga_smd sudah seminggu belum diperbaiki"
    assert intake.messages[complaint_id("x", OURS, stranger)].thread_of is None


# --- replies ----------------------------------------------------------------------------------


def reply_target(tweet_id: str = "1800") -> ReplyTarget:
    return ReplyTarget(complaint_id="c" * 32, tracking_code="ABCDE-12345", channel="x",
                       account=OURS, native_id=tweet_id, address=CITIZEN,
                       hints={"tweet_id": tweet_id, "author_id": CITIZEN})


async def test_reply_tweet_survives_429_then_succeeds(api: EmulatedXApi) -> None:
    x = connector(api, poll_interval_s=60)
    await x.start(FakeIntake())
    api.fail_next["tweets"] = [429, 502]
    try:
        with pytest.raises(ChannelUnavailable) as info:
            await x.send_reply(reply_target(), "Kode pelacakan: ABCDE-12345")
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 2
        async for attempt in retry_policy(max_delay=30):
            with attempt:
                sent = await x.send_reply(reply_target(), "Kode pelacakan: ABCDE-12345")
    finally:
        await x.stop()
    [posted] = api.posted
    assert posted.in_reply_to == "1800" and posted.text == "Kode pelacakan: ABCDE-12345"
    assert posted.authorization.startswith("OAuth ")
    assert sent is not None


async def test_dm_mode_and_permanent_errors(api: EmulatedXApi) -> None:
    x = connector(api, reply_mode="dm", poll_interval_s=60)
    await x.start(FakeIntake())
    try:
        await x.send_reply(reply_target(), "Kode pelacakan: ABCDE-12345")
        api.fail_next["dm"] = [403]
        with pytest.raises(ChannelRejected):
            await x.send_reply(reply_target(), "Kode pelacakan: ABCDE-12345")
    finally:
        await x.stop()
    assert [(dm.participant_id, dm.text) for dm in api.dms] == [
        (CITIZEN, "Kode pelacakan: ABCDE-12345")]
    off = connector(api, reply_mode="none")
    assert off.replies is False  # the reply loop owes nothing on X then
    with pytest.raises(ChannelRejected):
        await off.send_reply(reply_target(), "x")


async def test_no_backfill_starts_from_the_newest(api: EmulatedXApi) -> None:
    old = [mention(api, f"lama {i}") for i in range(7)]
    intake = FakeIntake()
    x = connector(api, backfill=False)
    await x.start(intake)
    try:
        async def cursor() -> bool:
            return intake.cursors.get(CURSOR) == old[-1]

        await wait_for(cursor, within=10, what="the first cursor")
        new = mention(api, "baru")
        await until(intake, 1)
    finally:
        await x.stop()
    assert [raw.native_id for raw in intake.messages.values()] == [new]


async def test_a_malformed_tweet_is_dead_lettered_and_does_not_block_the_stream(
        api: EmulatedXApi) -> None:
    before = mention(api, "Jalan rusak di Jl. Pahlawan")
    poison = mention(api, "Tanggal rusak")
    next(t for t in api.tweets if t["id"] == poison)["created_at"] = "kemarin"
    after = mention(api, "Lampu padam di Jl. Merdeka")
    intake = FakeIntake()
    x = connector(api)
    await x.start(intake)
    try:
        await until(intake, 2)

        async def passed() -> bool:
            return intake.cursors.get(CURSOR) == after

        await wait_for(passed, within=10, what="the cursor past the malformed tweet")
    finally:
        await x.stop()
    assert [raw.native_id for raw in intake.messages.values()] == [before, after]
    kept = {orjson.loads(payload)["data"]["id"]: reason
            for _, _, reason, payload in intake.dead_letters}
    assert kept == {poison: "malformed tweet: ValueError"}
    assert x.health().counters["dead_lettered"] == 1
