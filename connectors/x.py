"""X (Twitter): poll the mentions of our account (and optionally a hashtag), answer by reply
tweet or DM.

Reading (tweepy ``AsyncClient`` with the app Bearer token, ``return_type =
aiohttp.ClientResponse`` so the rate-limit headers are visible): each poll calls
``GET /2/users/{id}/mentions`` (and ``GET /2/tweets/search/recent`` for ``hashtag``) with
``since_id`` = the saved cursor, expansions ``author_id``, ``attachments.media_keys``,
``geo.place_id`` and tweet fields ``created_at``, ``conversation_id``, ``referenced_tweets``,
``lang`` (plus ``author_id``, ``attachments``, ``geo``, ``entities``). Pages come newest first:
the first page's ``meta.newest_id`` is remembered, ``meta.next_token`` followed (at most
``max_pages``), then the tweets are submitted **oldest first**. The cursor
(``x:<user_id>:mentions:since_id``, ``x:<user_id>:search:<hash>:since_id``) is saved only after
every tweet up to it was submitted: ``newest_id`` when all were, else the id of the last tweet
submitted before a failure (``since_id`` is exclusive and tweets are taken in id order, so
nothing before it is skipped). A restart re-reads from there; exact dedup absorbs a repeat.

Rate limits: tweepy's own ``wait_on_rate_limit`` is off (its sleep would block ``stop()``).
A 429 or ``x-rate-limit-remaining: 0`` sets the stream's next poll to ``x-rate-limit-reset``;
the loop waits for that (or any backoff) on the stop event, so ``stop()`` returns at once.
5xx and network errors back off exponentially up to ``max_backoff_s``; the state is
``degraded`` until a poll succeeds again.

Each tweet becomes a :class:`RawMessage`: channel ``"x"``, account ``user_id``, native id the
tweet id, sender handle ``@username`` and the author id, the text without the leading
mentions of our account, ``sent_at`` = ``created_at``, the place as location, photos and videos
as ``pending`` attachment references (their URL), and ``reply_hints`` ``{"tweet_id",
"author_id"}``. A reply to one of our reply tweets (we remember which complaint each answered,
through ``Intake.save_cursor("x:reply:<our tweet id>")``) from the same author is
``thread_of`` that complaint.

Replies (:meth:`XConnector.send_reply`, OAuth 1.0a user context): ``reply_mode = "tweet"`` posts
``POST /2/tweets`` with ``in_reply_to_tweet_id``; ``"dm"`` posts
``POST /2/dm_conversations/with/{author_id}/messages``; ``"none"`` refuses (``ChannelRejected``).
429 is ``ChannelUnavailable`` with ``retry_after`` from ``x-rate-limit-reset``, 5xx and network
errors ``ChannelUnavailable``, other 4xx ``ChannelRejected``.

Tests point the client at an emulator by giving a ``session_factory`` whose connector resolves
every host to the emulator and trusts its self-signed ``api.twitter.com`` certificate: tweepy's
host is not configurable (docs/CHANNELS.md section 4.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
import orjson
from tweepy.asynchronous import AsyncClient  # type: ignore[import-untyped]
from tweepy.errors import (  # type: ignore[import-untyped]
    HTTPException,
    TooManyRequests,
    TweepyException,
    TwitterServerError,
)

from config.x import XSettings
from connectors.base import (
    Attachment,
    BaseConnector,
    ConnectorState,
    Intake,
    IntakeResult,
    RawMessage,
    ReplyTarget,
    Sender,
)
from errors import (
    ChannelRejected,
    ChannelUnavailable,
    LaporError,
    StoreUnavailable,
    ValidationFailed,
)
from normalizer.schema import AttachmentState, Location

log = logging.getLogger(__name__)
# tweepy logs every request's headers (the Bearer token, OAuth signatures) at DEBUG: keep its
# loggers at INFO whatever the gateway's --log-level, so no secret reaches a log.
logging.getLogger("tweepy").setLevel(logging.INFO)

TWEET_FIELDS = ["author_id", "created_at", "conversation_id", "referenced_tweets", "lang",
                "attachments", "geo", "entities"]
EXPANSIONS = ["author_id", "attachments.media_keys", "geo.place_id"]
USER_FIELDS = ["username", "name"]
MEDIA_FIELDS = ["type", "url", "preview_image_url"]
PLACE_FIELDS = ["full_name", "geo", "country_code"]
TWEET_MAX = 280  # characters of a reply tweet (a URL counts 23, so this is conservative)
STOP_GRACE_S = 10.0  # stop() waits this long for an in-flight poll, then cancels it
FIRST_BACKOFF_S = 5.0  # the first wait after a failed poll; doubles up to max_backoff_s
_LEADING_MENTION = re.compile(r"^\s*@(\w{1,15})\b\s*")


# --- tweets to raw messages (pure) -----------------------------------------------------------


def strip_our_mentions(text: str, ours: set[str]) -> str:
    """``text`` without our account's ``@mentions`` among its leading mentions (the ones X
    adds to a reply); other leading mentions and everything after them stay."""
    kept: list[str] = []
    rest = text
    while (match := _LEADING_MENTION.match(rest)) is not None:
        if match.group(1).lower() not in ours:
            kept.append("@" + match.group(1))
        rest = rest[match.end():]
    return " ".join([*kept, rest.strip()]).strip() if kept else rest.strip()


@dataclass
class Includes:
    """The ``includes`` of one or more pages, indexed by id."""

    users: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    media: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    places: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def add(self, includes: Mapping[str, Any] | None) -> None:
        """Merge one page's ``includes``."""
        if not includes:
            return
        for user in includes.get("users", []):
            self.users[str(user["id"])] = user
        for media in includes.get("media", []):
            self.media[str(media["media_key"])] = media
        for place in includes.get("places", []):
            self.places[str(place["id"])] = place


def _refers_to(tweet: Mapping[str, Any], includes: Includes) -> dict[str, list[Any]]:
    """The ``includes`` (v2 form) one tweet refers to: its author, media and place; what a
    dead letter keeps beside the tweet, so its replay sees what the page had. Never raises
    (the tweet may be the malformed one)."""
    attachments = tweet.get("attachments")
    keys = attachments.get("media_keys") if isinstance(attachments, dict) else None
    geo = tweet.get("geo")
    place = geo.get("place_id") if isinstance(geo, dict) else None
    found = {
        "users": [includes.users.get(str(tweet.get("author_id")))],
        "media": [includes.media.get(str(k)) for k in keys] if isinstance(keys, list) else [],
        "places": [includes.places.get(str(place))],
    }
    return {name: [item for item in items if item] for name, items in found.items()}


def tweet_to_raw(tweet: Mapping[str, Any], includes: Includes, *, account: str,
                 username: str | None, connector: str = "x",
                 thread_of: str | None = None) -> RawMessage:
    """Turn one v2 tweet object (with the page's includes) into a :class:`RawMessage`."""
    author_id = str(tweet.get("author_id") or "")
    author = includes.users.get(author_id, {})
    ours = {username.lower().lstrip("@")} if username else set()
    for mention in tweet.get("entities", {}).get("mentions", []):
        if str(mention.get("id")) == account and mention.get("username"):
            ours.add(str(mention["username"]).lower())
    created = tweet.get("created_at")
    sent_at = datetime.fromisoformat(str(created).replace("Z", "+00:00")) if created else None
    attachments = []
    for key in tweet.get("attachments", {}).get("media_keys", []):
        media = includes.media.get(str(key))
        if media is None:
            continue
        kind = str(media.get("type", "photo"))
        url = media.get("url") or media.get("preview_image_url")
        attachments.append(Attachment(
            name=f"{key}.{'jpg' if kind == 'photo' else 'mp4' if kind == 'video' else 'gif'}",
            content_type="image/jpeg" if kind == "photo" else "video/mp4",
            size=0, storage_ref=str(url)[:500] if url else None,
            state=AttachmentState.PENDING))
    return RawMessage(
        channel="x",
        account=account,
        native_id=str(tweet["id"]),
        received_at=datetime.now(UTC),
        sent_at=sent_at,
        sender=Sender(name=author.get("name"),
                      handle=f"@{author['username']}" if author.get("username") else None,
                      channel_user_id=author_id or None),
        text=strip_our_mentions(str(tweet.get("text", "")), ours),
        location=_location(tweet, includes),
        attachments=tuple(attachments),
        thread_of=thread_of,
        connector=connector,
        raw_payload=orjson.dumps(tweet),
        raw_content_type="application/json",
        reply_hints={"tweet_id": str(tweet["id"]), "author_id": author_id},
    )


def _location(tweet: Mapping[str, Any], includes: Includes) -> Location | None:
    geo = tweet.get("geo") or {}
    lat = lon = None
    point = geo.get("coordinates") or {}
    if point.get("type") == "Point" and len(point.get("coordinates", [])) == 2:
        lon, lat = (float(c) for c in point["coordinates"])
    place = includes.places.get(str(geo.get("place_id", "")), {})
    bbox = (place.get("geo") or {}).get("bbox")
    if lat is None and isinstance(bbox, list) and len(bbox) == 4:
        lon, lat = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    text = place.get("full_name")
    if text is None and lat is None:
        return None
    return Location(text=text, lat=lat, lon=lon)


def replied_to(tweet: Mapping[str, Any]) -> str | None:
    """The id of the tweet this one replies to, if any."""
    for ref in tweet.get("referenced_tweets", []) or []:
        if ref.get("type") == "replied_to":
            return str(ref["id"])
    return None


# --- errors -----------------------------------------------------------------------------------


def translate(exc: BaseException, what: str) -> LaporError:
    """A tweepy / aiohttp error as ``ChannelUnavailable`` (429 with ``retry_after`` from
    ``x-rate-limit-reset``, 5xx, network) or ``ChannelRejected`` (other 4xx)."""
    if isinstance(exc, TooManyRequests):
        reset = exc.reset_time
        wait = max(1.0, float(reset) - time.time()) if reset is not None else None
        return ChannelUnavailable(f"{what}: rate limited", retry_after=wait)
    if isinstance(exc, TwitterServerError):
        return ChannelUnavailable(f"{what}: X answered {exc.response.status}")
    if isinstance(exc, HTTPException):
        return ChannelRejected(f"{what}: X answered {exc.response.status}: "
                               f"{'; '.join(str(m) for m in exc.api_messages)[:200]}")
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return ChannelUnavailable(f"{what}: network: {type(exc).__name__}")
    return ChannelUnavailable(f"{what}: {type(exc).__name__}")


# --- the connector ----------------------------------------------------------------------------


@dataclass
class _Stream:
    """One polled timeline: our mentions, or the hashtag search."""

    kind: str  # "mentions" | "search"
    cursor: str
    query: str | None = None
    not_before: float = 0.0  # rate limited until (epoch seconds)


SessionFactory = Callable[[], aiohttp.ClientSession]


class XConnector(BaseConnector):
    """Mentions (and a hashtag) polled from the X API v2; replies as tweets or DMs."""

    name: ClassVar[str] = "x"
    replies: bool = True

    def __init__(self, settings: XSettings, *, public_url: str | None,
                 session_factory: SessionFactory | None = None) -> None:
        """``session_factory`` makes the aiohttp session every API call goes through (tests
        give one that reaches the emulator); default: a plain session with the timeout."""
        super().__init__()
        self._settings = settings
        #: ``reply_mode = "none"``: the reply loop owes X citizens nothing.
        self.replies = settings.reply_mode != "none"
        self._public_url = public_url
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None
        self._read: Any = None
        self._write: Any = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        user = settings.user_id or ""
        self._streams = [_Stream("mentions", f"x:{user}:mentions:since_id")]
        if settings.hashtag:
            query = f"{settings.hashtag} -is:retweet"
            digest = hashlib.sha256(query.encode()).hexdigest()[:12]
            self._streams.append(_Stream("search", f"x:{user}:search:{digest}:since_id", query))

    @property
    def account(self) -> str:
        """Our account's user id (the messages' ``account``)."""
        return self._settings.user_id or ""

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self, intake: Intake) -> None:
        """Open the session, build the clients and start the polling loop."""
        await super().start(intake)
        self._stopping.clear()
        self._session = self._session_factory() if self._session_factory else \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=self._settings.request_timeout_s))
        s = self._settings

        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        self._read = AsyncClient(bearer_token=secret(s.bearer_token),
                                 return_type=aiohttp.ClientResponse, wait_on_rate_limit=False)
        self._read.session = self._session
        self._write = AsyncClient(
            consumer_key=secret(s.consumer_key), consumer_secret=secret(s.consumer_secret),
            access_token=secret(s.access_token),
            access_token_secret=secret(s.access_token_secret),
            return_type=aiohttp.ClientResponse, wait_on_rate_limit=False)
        self._write.session = self._session
        self._task = asyncio.create_task(self._loop(), name="x-poll")

    async def stop(self) -> None:
        """Signal the loop, give an in-flight poll ``STOP_GRACE_S`` to finish (un-submitted
        tweets stay after the saved cursor), then close the session."""
        self._stopping.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_S)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().stop()

    # polling -----------------------------------------------------------------------------------

    async def _loop(self) -> None:
        """Poll, then wait (on the stop event) for the interval, a backoff or a rate-limit
        reset, whichever is longest. Errors degrade the connector; they never end the loop."""
        failures = 0
        while not self._stopping.is_set():
            delay = self._settings.poll_interval_s
            try:
                if self.accepting:  # a paused connector does not poll
                    await self.poll_once()
            except Exception as exc:
                failures += 1
                self._health.state = ConnectorState.DEGRADED
                self.record_error(f"{type(exc).__name__}: {exc}")
                if isinstance(exc, LaporError):
                    log.warning("x: poll failed: %s", exc)
                else:  # a bug or an unexpected answer
                    log.exception("x: poll failed unexpectedly")
                retry_after = exc.retry_after if isinstance(exc, LaporError) else None
                delay = max(delay, retry_after if retry_after is not None else min(
                    self._settings.max_backoff_s, FIRST_BACKOFF_S * 2 ** min(failures - 1, 10)))
            else:
                failures = 0
                if self._health.state is ConnectorState.DEGRADED:
                    self._health.state = ConnectorState.RUNNING
            wait = max(delay, max(s.not_before for s in self._streams) - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)

    async def poll_once(self) -> int:
        """Poll every stream whose rate limit allows it; return how many tweets were
        submitted. Raises ``ChannelUnavailable``/``ChannelRejected`` (the API) or
        ``StoreUnavailable`` (the intake) after saving the cursor of what was submitted."""
        submitted = 0
        for stream in self._streams:
            if self._stopping.is_set():
                break
            if stream.not_before > time.time():
                continue
            submitted += await self._poll_stream(stream)
        return submitted

    async def _poll_stream(self, stream: _Stream) -> int:
        since_id = await self.intake.load_cursor(stream.cursor)
        first_run = since_id is None
        tweets: list[Mapping[str, Any]] = []
        includes = Includes()
        newest_id: str | None = None
        token: str | None = None
        for _ in range(self._settings.max_pages):
            payload = await self._fetch(stream, since_id, token)
            meta = payload.get("meta", {})
            if newest_id is None:
                newest_id = meta.get("newest_id")
            tweets.extend(payload.get("data", []) or [])
            includes.add(payload.get("includes"))
            token = meta.get("next_token")
            if not token or self._stopping.is_set() or (first_run and not
                                                        self._settings.backfill):
                break
        else:
            # More pages than max_pages: the oldest are skipped (X keeps only 800 anyway).
            self.count("truncated_polls")
            log.warning("x: %s poll stopped after %d pages; older tweets skipped",
                        stream.kind, self._settings.max_pages)
        if self._stopping.is_set():
            return 0  # nothing submitted, nothing acknowledged
        if first_run and not self._settings.backfill:
            if newest_id is not None:
                await self.intake.save_cursor(stream.cursor, str(newest_id))
            return 0
        tweets.sort(key=lambda t: int(t["id"]))
        last: str | None = None
        submitted = 0
        try:
            for tweet in tweets:
                if self._stopping.is_set():
                    break
                await self._submit_tweet(tweet, includes)
                last = str(tweet["id"])
                submitted += 1
            else:
                last = str(newest_id) if newest_id is not None else last
        finally:
            if last is not None and (since_id is None or int(last) > int(since_id)):
                with contextlib.suppress(StoreUnavailable):
                    await self.intake.save_cursor(stream.cursor, last)
        return submitted

    async def _submit_tweet(self, tweet: Mapping[str, Any], includes: Includes) -> None:
        try:
            await self._take_tweet(tweet, includes)
        except ValidationFailed as exc:
            # Nothing usable (only a mention) or a malformed tweet: kept as a dead letter and
            # passed, so one bad tweet never holds the stream back; retrying cannot help.
            log.info("x: tweet %s not accepted: %s", tweet.get("id"), exc)
            self.count("dead_lettered")
            await self.intake.dead_letter(
                channel="x", account=self.account or "", reason=str(exc),
                payload=orjson.dumps({"data": tweet, "includes": _refers_to(tweet, includes)}),
                content_type="application/json")

    async def _take_tweet(self, tweet: Mapping[str, Any],
                          includes: Includes) -> IntakeResult | None:
        """Submit one tweet; None when it is deliberately not a complaint (ours, a retweet).
        Raises ``ValidationFailed`` for a tweet that cannot be one (also a malformed one)."""
        if str(tweet.get("author_id")) == self.account:
            return None  # our own tweets (e.g. our replies mentioning us) are not complaints
        if any(ref.get("type") == "retweeted" for ref in tweet.get("referenced_tweets") or []):
            return None  # a retweet repeats someone's tweet; the original is the complaint
        thread_of = await self._thread_of(tweet)
        try:
            raw = tweet_to_raw(tweet, includes, account=self.account,
                               username=self._settings.username, connector=self.name,
                               thread_of=thread_of)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationFailed(f"malformed tweet: {type(exc).__name__}") from exc
        return await self.submit(raw)

    async def replay(self, payload: bytes, content_type: str) -> IntakeResult | None:
        """A kept tweet (``{"data": tweet}``, optionally with the page's ``includes``)
        submitted again; exact dedup on the tweet id makes a second replay a duplicate."""
        try:
            kept = orjson.loads(payload)
            tweet, includes = kept["data"], Includes()
            includes.add(kept.get("includes"))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValidationFailed('not a kept tweet ({"data": tweet})') from exc
        if not isinstance(tweet, dict):
            raise ValidationFailed('not a kept tweet ({"data": tweet})')
        return await self._take_tweet(tweet, includes)

    async def _thread_of(self, tweet: Mapping[str, Any]) -> str | None:
        """The complaint a reply to one of our reply tweets follows up, if any."""
        parent = replied_to(tweet)
        if parent is None:
            return None
        value = await self.intake.load_cursor(f"x:reply:{parent}")
        if not value:
            return None
        complaint, _, author = value.partition(" ")
        return complaint if author == str(tweet.get("author_id")) else None

    async def _fetch(self, stream: _Stream, since_id: str | None,
                     token: str | None) -> Mapping[str, Any]:
        params: dict[str, Any] = {
            "max_results": self._settings.max_results, "tweet_fields": TWEET_FIELDS,
            "expansions": EXPANSIONS, "user_fields": USER_FIELDS,
            "media_fields": MEDIA_FIELDS, "place_fields": PLACE_FIELDS}
        if since_id is not None:
            params["since_id"] = since_id
        try:
            if stream.kind == "mentions":
                if token:
                    params["pagination_token"] = token
                response = await self._read.get_users_mentions(self.account, **params)
            else:
                if token:
                    params["next_token"] = token
                response = await self._read.search_recent_tweets(stream.query, **params)
            payload = await response.json()
        except TooManyRequests as exc:
            stream.not_before = float(exc.reset_time or time.time() + 60)
            raise translate(exc, f"x {stream.kind}") from exc
        except (TweepyException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise translate(exc, f"x {stream.kind}") from exc
        self._note_limits(stream, response.headers)
        if not isinstance(payload, dict):
            raise ChannelUnavailable(f"x {stream.kind}: unexpected answer")
        return payload

    @staticmethod
    def _note_limits(stream: _Stream, headers: Mapping[str, str]) -> None:
        """An exhausted window (``x-rate-limit-remaining: 0``) waits for its reset."""
        if headers.get("x-rate-limit-remaining") == "0":
            with contextlib.suppress(ValueError):
                stream.not_before = float(headers.get("x-rate-limit-reset", ""))

    # replies -----------------------------------------------------------------------------------

    async def send_reply(self, target: ReplyTarget, text: str) -> str | None:
        """Answer the citizen per ``reply_mode``: a reply tweet to their tweet, or a DM.
        Returns the new tweet id or DM event id."""
        mode = self._settings.reply_mode
        if mode == "none":
            raise ChannelRejected("X replies are off (connectors.x.reply_mode = none)")
        if self._write is None:
            raise ChannelUnavailable("X connector not started")
        tweet_id = target.hints.get("tweet_id") or target.native_id
        author_id = target.hints.get("author_id") or target.address
        try:
            if mode == "tweet":
                response = await self._write.create_tweet(
                    text=_fit(text, TWEET_MAX), in_reply_to_tweet_id=tweet_id, user_auth=True)
            else:
                if not author_id:
                    raise ChannelRejected("no author id to send a DM to")
                response = await self._write.create_direct_message(
                    participant_id=author_id, text=text, user_auth=True)
            payload = await response.json()
        except (TweepyException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise translate(exc, f"x {mode} reply") from exc
        data = payload.get("data", {}) if isinstance(payload, dict) else {}
        sent = str(data.get("id") or data.get("dm_event_id") or "")
        if mode == "tweet" and sent:
            # Remember which complaint our tweet answered: a reply to it is a follow-up.
            with contextlib.suppress(StoreUnavailable):
                await self.intake.save_cursor(f"x:reply:{sent}",
                                              f"{target.complaint_id} {author_id or ''}")
        self.count("replies_sent")
        return sent or None


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


__all__: Sequence[str] = ["XConnector", "strip_our_mentions", "translate", "tweet_to_raw"]
