"""Normalising and fingerprinting complaints in a child process.

Normalising a message (routing rules, gazetteer, dates, phone numbers) and its near-duplicate
fingerprint (MinHash signature, places, categories) are the intake's heaviest CPU steps. On the
event loop they also hold the GIL that the store's threads need to run their statements, so on
two cores they slow everything else. :class:`IntakeWorker` hands the messages to a child
process, which works on the other core; the event loop only pickles messages and unpickles
answers (about 0.05 ms a complaint).

* **Started at the first complaint**, stopped after ``idle_s`` without one: an idle gateway
  carries no second interpreter.
* **Never in the way:** while the child starts, after it dies, or when it does not answer within
  ``timeout_s``, :meth:`IntakeWorker.prepare` returns None and the intake does the work in
  process as before. No complaint waits on the child or goes unlabelled because of it. A child
  that died or hung is killed and started again at the next complaint (at most every
  ``restart_after_s``). A message the child cannot normalise is also answered None: the intake
  normalises it again and refuses it with its own reasons.
* **Same answers:** the child gets the parent's :class:`~normalizer.routing.Router` pickled, so
  its complaints and fingerprints are the parent's, bit for bit, even after an operator edits
  the rule files.

The protocol on the child's stdin and stdout: frames of a 4-byte little-endian length and a
pickle (parent and child are the same program; nothing else writes to these pipes). The first
frame to the child is the router, answered by an empty list once the child is ready. Each later
frame is a list of :data:`Job`, answered in order by one list holding, per job, a
:data:`Prepared` or an error message.

Run as ``python -m gateway.intake_worker`` only by :class:`IntakeWorker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import pickle
import struct
import sys
import time
from collections import deque
from collections.abc import Iterable
from typing import IO, Any

from normalizer.dedup import fingerprint_of
from normalizer.normalize import normalize
from normalizer.raw import RawMessage
from normalizer.routing import Router
from normalizer.schema import Complaint
from normalizer.similarity import Fingerprint, index_hashes

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<I")

_IDLE = "idle"
_CLOSING = "the gateway stops"

#: A complaint's fingerprint and its index hashes (:func:`~normalizer.similarity.index_hashes`).
Fingerprinted = tuple[Fingerprint, list[int]]
#: What the child answers for one message: the complaint and, when asked for, its fingerprint
#: (None when fingerprinting failed: the caller tries again in process and reports it).
Prepared = tuple[Complaint, Fingerprinted | None]
#: One message for the child: the message (without its raw payload, which normalising does not
#: read), :func:`~normalizer.normalize.normalize`'s keyword arguments, and whether to
#: fingerprint the complaint.
Job = tuple[RawMessage, dict[str, str], bool]


# --------------------------------------------------------------------------------- the child


def _read_frame(stream: IO[bytes]) -> Any:
    """The next frame's object, or None at the end of the stream."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    return pickle.loads(stream.read(length))  # noqa: S301 - our own parent, over a pipe


def _frame(value: object) -> bytes:
    """``value`` pickled, behind its length: one frame, either way."""
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


def _write_frame(stream: IO[bytes], value: object) -> None:
    stream.write(_frame(value))
    stream.flush()


def _prepared(job: Job, router: Router) -> Prepared | str:
    raw, arguments, wanted = job
    try:
        complaint = normalize(raw, router=router, **arguments)
    except Exception as exc:  # noqa: BLE001 - the parent normalises again and refuses it
        return f"{type(exc).__name__}: {exc}"
    if not wanted:
        return complaint, None
    try:
        found = fingerprint_of(complaint, router)
        return complaint, (found, index_hashes(found))
    except Exception:  # noqa: BLE001 - the parent fingerprints again and reports it
        return complaint, None


def main() -> int:
    """The child: answer frames of jobs until stdin closes."""
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the protocol
    router = _read_frame(requests)
    if not isinstance(router, Router):
        return 0
    _write_frame(answers, [])
    while (jobs := _read_frame(requests)) is not None:
        _write_frame(answers, [_prepared(job, router) for job in jobs])
    return 0


# -------------------------------------------------------------------------------- the parent


def _answer_none(futures: Iterable[asyncio.Future[Prepared | None]]) -> None:
    """Answer None (the caller works in process) where nothing answered yet."""
    for future in futures:
        if not future.done():
            future.set_result(None)


class _Child:
    """One running child process and the batches it has not answered yet."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.ready = False
        #: Unanswered batches, oldest first: their futures and their deadline's timer.
        self.waiting: deque[tuple[list[asyncio.Future[Prepared | None]],
                                  asyncio.TimerHandle]] = deque()
        self.reader: asyncio.Task[None] | None = None
        self.why_stopped = ""

    def send(self, value: object) -> None:
        """One frame to the child (buffered by the pipe's transport)."""
        assert self.process.stdin is not None
        self.process.stdin.write(_frame(value))

    def give_up(self) -> None:
        """Take no more jobs and answer every waiting one with None (the caller does it in
        process instead)."""
        self.ready = False
        while self.waiting:
            futures, timer = self.waiting.popleft()
            timer.cancel()
            _answer_none(futures)

    def kill(self, why: str) -> None:
        """Kill the process (its reader then gives up on what is waiting)."""
        if not self.why_stopped:
            self.why_stopped = why
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class IntakeWorker:
    """Normalises and fingerprints messages in a child process (see the module docstring)."""

    #: Batches sent and not answered yet, at most: jobs arriving meanwhile wait and go as one
    #: batch when an answer comes (the busier the intake, the bigger the batches: fewer pipe
    #: writes, each of which gives up the GIL), while the child always has the next batch.
    IN_FLIGHT = 2

    def __init__(self, router: Router, *, idle_s: float = 300.0, timeout_s: float = 10.0,
                 batch: int = 64, restart_after_s: float = 5.0) -> None:
        self._router = router
        self._idle_s = idle_s
        self._timeout_s = timeout_s
        self._batch = batch
        self._restart_after_s = restart_after_s
        self._child: _Child | None = None
        self._starting: asyncio.Task[None] | None = None
        self._started_at = -restart_after_s
        self._last_used = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._queue: list[tuple[Job, asyncio.Future[Prepared | None]]] = []
        self._flush_planned = False
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running child's pid (None when there is none)."""
        return self._child.process.pid if self._child is not None else None

    async def prepare(self, raw: RawMessage, arguments: dict[str, str], *,
                      fingerprint: bool) -> Prepared | None:
        """``normalize(raw, router=..., **arguments)`` and, if ``fingerprint``, the complaint's
        fingerprint, from the child; None when the child cannot answer now (starting, died,
        too slow, or the message failed there): the caller does the work in process."""
        self._last_used = time.monotonic()
        child = self._child
        if child is None or not child.ready:
            self._start_soon()
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prepared | None] = loop.create_future()
        job: Job = (raw.model_copy(update={"raw_payload": b""}) if raw.raw_payload else raw,
                    arguments, fingerprint)
        self._queue.append((job, future))
        if not self._flush_planned and len(child.waiting) < self.IN_FLIGHT:
            self._flush_planned = True
            loop.call_soon(self._flush)
        return await future

    async def aclose(self) -> None:
        """Stop the child (waiting complaints get None) and start no other."""
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._answer_queue_in_process()
        if self._child is not None:
            await self._stop(self._child, _CLOSING)

    # -- batching

    def _flush(self) -> None:
        self._flush_planned = False
        child = self._child
        if child is None or not child.ready:
            self._answer_queue_in_process()
            return
        loop = asyncio.get_running_loop()
        while self._queue and len(child.waiting) < self.IN_FLIGHT:
            part, self._queue = self._queue[:self._batch], self._queue[self._batch:]
            try:
                child.send([job for job, _ in part])
            except (BrokenPipeError, ConnectionResetError, RuntimeError):
                _answer_none(future for _, future in part)
                child.kill("its input pipe broke")
                self._abandon(child)
                return
            timer = loop.call_later(self._timeout_s, self._expire, child)
            child.waiting.append(([future for _, future in part], timer))

    def _expire(self, child: _Child) -> None:
        child.kill(f"it did not answer within {self._timeout_s:g} s")
        self._abandon(child)

    def _abandon(self, child: _Child) -> None:
        """Everything sent to ``child`` or waiting to be sent is answered None."""
        child.give_up()
        self._answer_queue_in_process()

    def _answer_queue_in_process(self) -> None:
        queue, self._queue = self._queue, []
        _answer_none(future for _, future in queue)

    # -- the child's life

    def _start_soon(self) -> None:
        if self._closed or self._starting is not None or self._child is not None:
            return
        if time.monotonic() - self._started_at < self._restart_after_s:
            return  # it died or hung a moment ago: in process for a while
        self._started_at = time.monotonic()
        # A context of its own: the complaint that happens to start the child must not be
        # named in the child's log lines (connector, complaint_id of LOG_CONTEXT).
        self._starting = asyncio.get_running_loop().create_task(
            self._start(), name="intake-worker-start", context=contextvars.Context())

    async def _start(self) -> None:
        try:
            # No preexec_fn (such as the broker's PDEATHSIG): this fork happens while the
            # store's threads run, and Python code between fork and exec could deadlock on a
            # lock one of them held. The child needs none: it exits when its stdin closes,
            # which the gateway's death does too.
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.intake_worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                # A terminal's Ctrl-C reaches the gateway only; it stops the child itself.
                start_new_session=True)
            child = _Child(process)
            self._child = child
            child.reader = asyncio.get_running_loop().create_task(
                self._read(child), name="intake-worker-reader")
            child.send(self._router)  # answered with [] once the child is ready
        except (OSError, RuntimeError) as exc:
            log.warning("intake worker could not start (%s); working in process", exc)
        finally:
            self._starting = None

    async def _read(self, child: _Child) -> None:
        """Answers from the child, matched to the oldest waiting batch, until it exits."""
        assert child.process.stdout is not None
        stdout = child.process.stdout
        try:
            while True:
                header = await stdout.readexactly(_LENGTH.size)
                (length,) = _LENGTH.unpack(header)
                answers = pickle.loads(await stdout.readexactly(length))  # noqa: S301
                if not child.ready:
                    child.ready = True
                    log.info("intake worker pid %s ready", child.process.pid)
                    self._plan_idle_check()
                    continue
                futures, timer = child.waiting.popleft()
                timer.cancel()
                for future, answer in zip(futures, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, str):
                        log.debug("intake worker: %s", answer)  # the caller reports it
                        answer = None
                    future.set_result(answer)
                if self._queue and not self._flush_planned:
                    self._flush()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass  # it exited
        except Exception as exc:  # noqa: BLE001 - a garbled answer: stop this child
            child.kill(f"its answer was unreadable ({type(exc).__name__})")
        finally:
            self._abandon(child)
            await self._reap(child)

    async def _reap(self, child: _Child) -> None:
        code = await child.process.wait()
        if self._child is child:
            self._child = None
        if child.why_stopped in (_IDLE, _CLOSING):
            log.info("intake worker pid %s stopped (%s)", child.process.pid,
                     child.why_stopped)
        else:
            log.warning("intake worker pid %s stopped: %s (exit code %s); working in "
                        "process until it is started again", child.process.pid,
                        child.why_stopped or "it exited", code)

    async def _stop(self, child: _Child, why: str) -> None:
        """Close the child's input (it exits when it has answered everything)."""
        child.why_stopped = why
        child.ready = False  # new messages are worked on in process meanwhile
        if child.process.stdin is not None:
            child.process.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(child.process.wait()), self._timeout_s)
        except TimeoutError:
            child.kill(why)
        if child.reader is not None:
            await asyncio.gather(child.reader, return_exceptions=True)

    def _plan_idle_check(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(
            self._idle_s / 4, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        child = self._child
        if child is None or self._closed:
            return
        if time.monotonic() - self._last_used >= self._idle_s and not child.waiting:
            asyncio.get_running_loop().create_task(self._stop(child, _IDLE),
                                                   name="intake-worker-stop")
            return
        self._plan_idle_check()


if __name__ == "__main__":
    raise SystemExit(main())
