"""The exception hierarchy and the one shared retry policy."""

from __future__ import annotations

import warnings

import pytest

from errors import (
    AttachmentRejected,
    AuthenticationFailed,
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    LaporError,
    NotFound,
    StoreError,
    StoreUnavailable,
    ValidationFailed,
    is_retriable,
    retry_policy,
)


class Flaky:
    """Fails with the given errors in turn, then returns "ok"; counts attempts."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.attempts = 0

    async def __call__(self) -> str:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class Sleeps:
    """A fake sleep that records the requested delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def _policy(sleeps: Sleeps, **kwargs: float) -> object:
    return retry_policy(initial=0.001, maximum=0.002, sleep=sleeps, **kwargs)


def test_building_the_policy_emits_no_warning() -> None:
    # Warnings are errors in this project: a deprecated tenacity argument would break every
    # caller of retry_policy under test.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retry_policy()
        retry_policy(max_delay=5, initial=0.5, maximum=2)


@pytest.mark.parametrize(
    ("exc", "retriable"),
    [
        (StoreUnavailable("db locked"), True),
        (BrokerUnavailable("no leader"), True),
        (StoreError("corrupt"), False),
        (BrokerError("topic authorization failed"), False),
        (ValidationFailed("bad"), False),
        (AttachmentRejected("too big"), False),
        (ConfigError("bad"), False),
        (AuthenticationFailed("no key"), False),
        (NotFound("nope"), False),
        (ConnectionError("not ours"), False),
        (ValueError("not ours"), False),
    ],
)
def test_is_retriable(exc: BaseException, retriable: bool) -> None:
    assert is_retriable(exc) is retriable


def test_hierarchy() -> None:
    assert issubclass(AttachmentRejected, ValidationFailed)
    assert issubclass(StoreUnavailable, StoreError)
    assert issubclass(BrokerUnavailable, BrokerError)
    for cls in (ConfigError, ValidationFailed, AuthenticationFailed, NotFound, StoreError,
                BrokerError):
        assert issubclass(cls, LaporError)


def test_validation_failed_fields() -> None:
    assert ValidationFailed("x").fields == {}
    exc = AttachmentRejected("x", {"lampiran": "terlalu besar"})
    assert exc.fields == {"lampiran": "terlalu besar"}
    assert str(exc) == "x"


async def test_retries_a_retriable_error_then_succeeds() -> None:
    sleeps = Sleeps()
    op = Flaky(StoreUnavailable("locked"), BrokerUnavailable("no leader"))
    assert await _policy(sleeps)(op) == "ok"  # type: ignore[operator]
    assert op.attempts == 3
    assert len(sleeps.delays) == 2
    assert all(0 <= d <= 0.002 for d in sleeps.delays)


@pytest.mark.parametrize(
    "exc", [ValidationFailed("bad"), StoreError("corrupt"), BrokerError("fatal"),
            ValueError("bug")],
)
async def test_does_not_retry_a_non_retriable_error(exc: BaseException) -> None:
    sleeps = Sleeps()
    op = Flaky(exc)
    with pytest.raises(type(exc)) as info:
        await _policy(sleeps)(op)  # type: ignore[operator]
    assert info.value is exc  # re-raised as is, not wrapped in tenacity.RetryError
    assert op.attempts == 1
    assert sleeps.delays == []


async def test_stops_retrying_at_the_first_non_retriable_error() -> None:
    sleeps = Sleeps()
    op = Flaky(StoreUnavailable("locked"), StoreError("corrupt"))
    with pytest.raises(StoreError) as info:
        await _policy(sleeps)(op)  # type: ignore[operator]
    assert not isinstance(info.value, StoreUnavailable)
    assert op.attempts == 2


async def test_honours_retry_after() -> None:
    sleeps = Sleeps()
    op = Flaky(BrokerUnavailable("throttled", retry_after=7.5), StoreUnavailable("locked"))
    assert await _policy(sleeps)(op) == "ok"  # type: ignore[operator]
    assert op.attempts == 3
    assert sleeps.delays[0] == 7.5  # as asked, not the 2 ms backoff
    assert sleeps.delays[1] <= 0.002  # no retry_after: the backoff again


async def test_max_delay_bounds_the_retries() -> None:
    op = Flaky(*(StoreUnavailable(f"locked {i}") for i in range(10_000)))
    with pytest.raises(StoreUnavailable):
        await retry_policy(max_delay=0.05, initial=0.005, maximum=0.01)(op)
    assert 2 <= op.attempts < 10_000


async def test_async_for_form() -> None:
    sleeps = Sleeps()
    op = Flaky(StoreUnavailable("locked"))
    async for attempt in retry_policy(initial=0.001, maximum=0.002, sleep=sleeps):
        with attempt:
            result = await op()
    assert result == "ok"
    assert op.attempts == 2
