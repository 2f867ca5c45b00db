"""Resident memory: idle with every connector on, then under a steady load of complaints.

Usage (from the repository root)::

    .venv/bin/python bench/memory.py                       # 1,000 complaints/s for 10 minutes
    .venv/bin/python bench/memory.py --rate 500 --minutes 2    # quick look
    .venv/bin/python bench/memory.py --complaints 1000000  # until a million (at --rate)

Starts ``lapor-gateway run`` with the web form, the partner API, WhatsApp, Messenger/Instagram,
SMS (generic provider) and Telegram (polling) on. Their channel APIs are addresses on loopback
where nothing listens: nothing leaves the machine, and the pull connectors keep retrying as
they would with the channel down. X is left off: its API host is not configurable (tweepy), so
it would reach the internet. RSS is ``VmRSS`` of ``/proc/<pid>/status``, of the gateway (with
its intake worker child, when one runs, counted in: shown in its own column) and of
the embedded broker (its child, ``tansu``, memory storage: it keeps every record it was sent,
so it grows with the load by design) reported separately.

The load is signed WhatsApp webhooks (open loop, ``--rate`` per second) in one-minute rounds,
with RSS sampled every ``--every`` seconds (the "scheduled" column is what the load schedule
had offered by then, "accepted" what was answered 200 in the rounds finished by then; the rest
are the errors counted at the end: 503 once the inbox's bound is reached, when the handling
falls behind the offered rate). Goals (issue #11): gateway idle < 200 MiB, and no
growth under steady load: the table shows the curve, and the verdict compares the last
quarter's mean with the second quarter's (after warm-up).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from _common import child_rss_kib, load, rss_kib, start_gateway, table

WORKER = "gateway.intake_worker"

GOAL_IDLE_MIB = 200.0
GROWTH_TOLERANCE = 0.10  # last quarter's mean may exceed the second quarter's by this much
ROUND_S = 60.0
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


def connector_env() -> dict[str, str]:
    """Every connector that can run on loopback only, with dummy credentials."""
    return {
        "LAPOR_CONNECTORS__API__KEYS": '{"bench": "bench-api-key"}',
        "LAPOR_CONNECTORS__META__ENABLED": "true",
        "LAPOR_CONNECTORS__META__APP_SECRET": "bench-meta-secret",
        "LAPOR_CONNECTORS__META__VERIFY_TOKEN": "bench-verify",
        "LAPOR_CONNECTORS__META__PAGE_ACCESS_TOKEN": "bench-page-token",
        "LAPOR_CONNECTORS__META__API_BASE": f"{DEAD}/v21.0",
        "LAPOR_CONNECTORS__SMS__ENABLED": "true",
        "LAPOR_CONNECTORS__SMS__PROVIDER": "generic",
        "LAPOR_CONNECTORS__SMS__GENERIC_HMAC_SECRET": "bench-sms-secret",
        "LAPOR_CONNECTORS__SMS__SEND_API_BASE": DEAD,
        "LAPOR_CONNECTORS__TELEGRAM__ENABLED": "true",
        "LAPOR_CONNECTORS__TELEGRAM__MODE": "polling",
        "LAPOR_CONNECTORS__TELEGRAM__TOKEN": "123456:bench-telegram-token",
        "LAPOR_CONNECTORS__TELEGRAM__API_BASE": DEAD,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="complaints per second")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--complaints", type=int,
                        help="stop after this many complaints instead (at --rate)")
    parser.add_argument("--idle", type=float, default=20.0, help="idle seconds before load")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()
    seconds = args.complaints / args.rate if args.complaints else args.minutes * 60

    # (t, accepted, gateway, broker, intake worker MiB)
    samples: list[tuple[float, int, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        data_dir = Path(tmp)
        gateway = start_gateway(data_dir, extra_env=connector_env())
        url = gateway.url
        broker = int((data_dir / "embedded-broker.pid").read_text().strip())
        accepted = 0

        def sample(t0: float) -> None:
            samples.append((time.monotonic() - t0, accepted, rss_kib(gateway.pid) / 1024,
                            rss_kib(broker) / 1024, child_rss_kib(gateway.pid, WORKER) / 1024))


        try:
            time.sleep(args.idle)
            idle = (rss_kib(gateway.pid) / 1024, rss_kib(broker) / 1024,
                    child_rss_kib(gateway.pid, WORKER) / 1024)
            start = time.monotonic()
            sample(start)
            stop = threading.Event()

            def sampler() -> None:
                while not stop.wait(args.every):
                    sample(start)

            thread = threading.Thread(target=sampler, daemon=True)
            thread.start()
            errors = 0
            while time.monotonic() - start < seconds:
                length = min(ROUND_S, seconds - (time.monotonic() - start))
                result = load(url + "/webhooks/whatsapp", concurrency=256, seconds=length,
                              rate=args.rate)
                accepted += result.ok
                errors += result.errors
            stop.set()
            thread.join()
            sample(start)
        finally:
            gateway.stop()
    rows = [[f"{t:.0f}", int(min(t, seconds) * args.rate), a, g, b, w]
            for t, a, g, b, w in samples]
    print(table(["t (s)", "scheduled", "accepted", "gateway RSS MiB", "broker RSS MiB",
                 "intake worker RSS MiB"],
                [["idle", 0, 0, *idle], *rows],
                title=f"Resident memory, all loopback connectors on, {args.rate:,.0f} "
                      f"complaints/s offered"))
    quarter = max(1, len(samples) // 4)
    # The gateway's own RSS plus its intake worker's: the worker is part of it.
    second = [g + w for _, _, g, _, w in samples[quarter:2 * quarter]] or [samples[0][2]]
    last = [g + w for _, _, g, _, w in samples[-quarter:]]
    third = [g + w for _, _, g, _, w in samples[2 * quarter:3 * quarter]] or second
    growth = sum(last) / len(last) / (sum(second) / len(second)) - 1
    late = sum(last) / len(last) / (sum(third) / len(third)) - 1
    print()
    print(f"complaints accepted {accepted:,} (errors {errors:,}) in {seconds:,.0f} s")
    idle_total = idle[0] + idle[2]
    print(f"idle gateway RSS {idle_total:.1f} MiB, intake worker included "
          f"(goal < {GOAL_IDLE_MIB:.0f}): {'met' if idle_total < GOAL_IDLE_MIB else 'MISSED'}")
    print(f"gateway RSS growth, last quarter vs second quarter {growth:+.1%} "
          f"(goal: none, tolerance {GROWTH_TOLERANCE:.0%}): "
          f"{'met' if growth <= GROWTH_TOLERANCE else 'MISSED'}")
    print(f"gateway RSS growth, last quarter vs third quarter {late:+.1%} (informative: the "
          f"bounded caches fill for the first ~100,000 complaints, then the curve is flat)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
