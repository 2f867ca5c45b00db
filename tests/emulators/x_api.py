"""An emulated X API v2 over HTTPS, with a self-signed ``api.twitter.com`` certificate.

Endpoints (the ones ``connectors.x`` uses), following docs.x.com:

* ``GET /2/users/{id}/mentions``: tweets mentioning the user, newest first, at most the latest
  800; ``since_id``/``until_id`` exclusive; ``max_results`` 5..100 (else 400);
  ``pagination_token`` from ``meta.next_token``; ``meta`` with ``result_count``,
  ``newest_id``, ``oldest_id`` of the page; fields and ``includes`` per ``tweet.fields`` and
  ``expansions``.
* ``GET /2/tweets/search/recent``: the same over tweets containing the query's first word
  (a hashtag), ``next_token`` paging.
* ``POST /2/tweets`` (``reply.in_reply_to_tweet_id``) and
  ``POST /2/dm_conversations/with/{participant_id}/messages``: OAuth 1.0a user context required.

Every answer carries ``x-rate-limit-limit/-remaining/-reset``. ``fail_next[kind]`` (kind:
``mentions``, ``search``, ``tweets``, ``dm``) is a list of statuses answered before successes;
a 429 carries ``x-rate-limit-reset`` = now + ``reset_in`` and ``remaining`` 0.

Reaching it through tweepy (whose host is hard-coded): :meth:`EmulatedXApi.session` makes an
``aiohttp.ClientSession`` whose resolver maps every host to 127.0.0.1:<port> and whose SSL
context trusts only the emulator's certificate (docs/CHANNELS.md section 4.2).
"""

from __future__ import annotations

import datetime as dt
import itertools
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.emulators.loopback import serve_loopback

HOSTS = ("api.twitter.com", "pbs.twimg.com")
WINDOW_S = 900
FIELDS_ALWAYS = ("id", "text", "edit_history_tweet_ids")


def self_signed_cert(directory: Path) -> tuple[Path, Path, bytes]:
    """A self-signed certificate for :data:`HOSTS`: (cert file, key file, cert PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, pem


class LoopbackResolver(AbstractResolver):
    """Resolves every host name to 127.0.0.1 and the emulator's port."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": "127.0.0.1", "port": self.port,
                 "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None


@dataclass
class PostedTweet:
    text: str
    in_reply_to: str | None
    authorization: str


@dataclass
class PostedDm:
    participant_id: str
    text: str


@dataclass
class EmulatedXApi:
    """The X API v2 emulator; tweets are dicts in the v2 shape (all fields)."""

    bearer_token: str = "bearer-test-token"
    me: str | None = None  # the user id of the OAuth 1.0a user: posted tweets become theirs
    reset_in: int = 1
    tweets: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    places: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next: dict[str, list[int]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    posted: list[PostedTweet] = field(default_factory=list)
    dms: list[PostedDm] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1_800_000_000_000_000_000, 7919)
        self._runner: web.AppRunner | None = None
        self._tmp = tempfile.TemporaryDirectory()
        self.cert_pem = b""
        self.port = 0

    # test set-up -------------------------------------------------------------------------------

    def add_user(self, user_id: str, username: str, name: str | None = None) -> None:
        self.users[user_id] = {"id": user_id, "username": username, "name": name or username}

    def add_tweet(self, text: str, author_id: str, *, mentions: tuple[str, ...] = (),
                  in_reply_to: str | None = None, media: tuple[dict[str, Any], ...] = (),
                  place: dict[str, Any] | None = None) -> str:
        """Post a tweet by ``author_id`` mentioning the user ids in ``mentions``; its id."""
        tweet_id = str(next(self._ids))
        entities = [{"start": 0, "end": 0, "username": self.users[u]["username"], "id": u}
                    for u in mentions if u in self.users]
        tweet: dict[str, Any] = {
            "id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id],
            "author_id": author_id, "created_at": dt.datetime.now(dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "conversation_id": tweet_id, "lang": "in", "_mentions": list(mentions),
            "entities": {"mentions": entities},
        }
        if in_reply_to is not None:
            parent = next(t for t in self.tweets if t["id"] == in_reply_to)
            tweet["referenced_tweets"] = [{"type": "replied_to", "id": in_reply_to}]
            tweet["conversation_id"] = parent["conversation_id"]
        if media:
            for item in media:
                self.media[item["media_key"]] = item
            tweet["attachments"] = {"media_keys": [m["media_key"] for m in media]}
        if place is not None:
            self.places[place["id"]] = place
            tweet["geo"] = {"place_id": place["id"]}
        self.tweets.append(tweet)
        return tweet_id

    # server ------------------------------------------------------------------------------------

    async def start(self) -> None:
        cert, key, self.cert_pem = self_signed_cert(Path(self._tmp.name))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_get("/2/users/{id}/mentions", self._mentions)
        app.router.add_get("/2/tweets/search/recent", self._search)
        app.router.add_post("/2/tweets", self._create_tweet)
        app.router.add_post("/2/dm_conversations/with/{pid}/messages", self._create_dm)
        self._runner, self.port = await serve_loopback(app, ssl_context=context)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._tmp.cleanup()

    def session(self) -> aiohttp.ClientSession:
        """A client session that reaches this emulator for every host, over verified TLS."""
        context = ssl.create_default_context(cadata=self.cert_pem.decode())
        connector = aiohttp.TCPConnector(resolver=LoopbackResolver(self.port), ssl=context)
        return aiohttp.ClientSession(connector=connector)

    # helpers -----------------------------------------------------------------------------------

    def _limits(self, remaining: int = 100) -> dict[str, str]:
        return {"x-rate-limit-limit": "180", "x-rate-limit-remaining": str(remaining),
                "x-rate-limit-reset": str(int(time.time()) + WINDOW_S)}

    def _failure(self, kind: str) -> web.Response | None:
        queue = self.fail_next.get(kind)
        if not queue:
            return None
        status = queue.pop(0)
        if status == 429:
            headers = {"x-rate-limit-limit": "180", "x-rate-limit-remaining": "0",
                       "x-rate-limit-reset": str(int(time.time()) + self.reset_in)}
            return web.json_response({"title": "Too Many Requests", "detail": "Too Many Requests",
                                      "type": "about:blank", "status": 429}, status=429,
                                     headers=headers)
        return web.json_response({"title": "Error", "detail": f"emulated {status}",
                                  "type": "about:blank", "status": status}, status=status,
                                 headers=self._limits())

    def _bearer_ok(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.bearer_token}"

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response({"title": "Unauthorized", "type": "about:blank",
                                  "status": 401, "detail": "Unauthorized"}, status=401)

    def _page(self, request: web.Request, matching: list[dict[str, Any]],
              token_param: str) -> web.Response:
        q = request.query
        try:
            max_results = int(q.get("max_results", "10"))
        except ValueError:
            max_results = 0
        if not 5 <= max_results <= 100:
            return web.json_response({"title": "Invalid Request", "errors": [
                {"message": "max_results must be between 5 and 100"}]}, status=400)
        newest_first = sorted(matching, key=lambda t: int(t["id"]), reverse=True)[:800]
        if "since_id" in q:
            newest_first = [t for t in newest_first if int(t["id"]) > int(q["since_id"])]
        if "until_id" in q:
            newest_first = [t for t in newest_first if int(t["id"]) < int(q["until_id"])]
        offset = int(q[token_param].removeprefix("tok")) if token_param in q else 0
        page = newest_first[offset:offset + max_results]
        fields = set(q.get("tweet.fields", "").split(",")) | set(FIELDS_ALWAYS)
        expansions = set(filter(None, q.get("expansions", "").split(",")))
        meta: dict[str, Any] = {"result_count": len(page)}
        if page:
            meta["newest_id"], meta["oldest_id"] = page[0]["id"], page[-1]["id"]
        if offset + max_results < len(newest_first):
            meta["next_token"] = f"tok{offset + max_results}"
        body: dict[str, Any] = {"meta": meta}
        if page:
            body["data"] = [{k: v for k, v in t.items() if k in fields or
                             (k == "author_id" and "author_id" in expansions)} for t in page]
            includes: dict[str, list[dict[str, Any]]] = {}
            if "author_id" in expansions:
                authors = dict.fromkeys(t["author_id"] for t in page)
                includes["users"] = [self.users[a] for a in authors if a in self.users]
            if "attachments.media_keys" in expansions:
                keys = [k for t in page for k in t.get("attachments", {}).get("media_keys", [])]
                includes["media"] = [self.media[k] for k in keys if k in self.media]
            if "geo.place_id" in expansions:
                ids = [t["geo"]["place_id"] for t in page if "geo" in t]
                includes["places"] = [self.places[p] for p in dict.fromkeys(ids)]
            body["includes"] = {k: v for k, v in includes.items() if v}
        return web.json_response(body, headers=self._limits())

    # routes ------------------------------------------------------------------------------------

    async def _mentions(self, request: web.Request) -> web.Response:
        self.requests.append(("mentions", dict(request.query)))
        if not self._bearer_ok(request):
            return self._unauthorized()
        failure = self._failure("mentions")
        if failure is not None:
            return failure
        user_id = request.match_info["id"]
        return self._page(request, [t for t in self.tweets if user_id in t["_mentions"]],
                          "pagination_token")

    async def _search(self, request: web.Request) -> web.Response:
        self.requests.append(("search", dict(request.query)))
        if not self._bearer_ok(request):
            return self._unauthorized()
        failure = self._failure("search")
        if failure is not None:
            return failure
        word = request.query.get("query", "").split()[0].lower()
        return self._page(request, [t for t in self.tweets if word in t["text"].lower()],
                          "next_token")

    @staticmethod
    def _oauth1(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("OAuth ") and "oauth_signature=" in header and \
                "oauth_consumer_key=" in header and "oauth_token=" in header:
            return header
        return None

    async def _create_tweet(self, request: web.Request) -> web.Response:
        auth = self._oauth1(request)
        if auth is None:
            return self._unauthorized()
        failure = self._failure("tweets")
        if failure is not None:
            return failure
        body = await request.json()
        reply = (body.get("reply") or {}).get("in_reply_to_tweet_id")
        self.posted.append(PostedTweet(body.get("text", ""), reply, auth))
        if self.me is not None:
            tweet_id = self.add_tweet(body.get("text", ""), self.me, in_reply_to=reply if any(
                t["id"] == reply for t in self.tweets) else None)
        else:
            tweet_id = str(next(self._ids))
        return web.json_response({"data": {"id": tweet_id, "text": body.get("text", ""),
                                           "edit_history_tweet_ids": [tweet_id]}},
                                 status=201, headers=self._limits())

    async def _create_dm(self, request: web.Request) -> web.Response:
        if self._oauth1(request) is None:
            return self._unauthorized()
        failure = self._failure("dm")
        if failure is not None:
            return failure
        body = await request.json()
        self.dms.append(PostedDm(request.match_info["pid"], body.get("text", "")))
        return web.json_response({"data": {"dm_conversation_id": "c1",
                                           "dm_event_id": str(next(self._ids))}},
                                 status=201, headers=self._limits())
