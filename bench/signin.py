#!/usr/bin/env python3
"""Sign-in polling figures, as ratios to the polling interval.

1. Token requests per pending minute, against what RFC 8628's interval
   allows (60 / interval): the client and the local identity provider share
   a FakeClock, so ten pending minutes pass in a moment. Also with
   slow_down answers mixed in.
2. Time from approval to token in hand, on the real clock: the code is
   approved at a random moment inside a polling interval; the client holds
   the token at its next poll, so the latency should be at most one interval
   (mean about half).

Usage: python3 bench/signin.py [--trials 12] [--interval 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.auth.errors import CodeExpired  # noqa: E402
from agent.auth.tokens import TokenClient  # noqa: E402
from agent.clock import FakeClock, SystemClock  # noqa: E402
from agent.profiles import Profile  # noqa: E402
from agent.sandbox.idp import Fault, IdentityProvider  # noqa: E402
from agent.tokenstore import TokenStore  # noqa: E402

CLIENT_ID = "00000000-0000-0000-0000-000000000001"


def client_for(idp: IdentityProvider, clock, folder: Path) -> TokenClient:
    profile = Profile(name="bench", client_id=CLIENT_ID, tenant_id="organizations",
                      authority_host=idp.base_url).validated()
    return TokenClient(profile, store=TokenStore(folder / "tokens"), clock=clock)


def pending_minutes(interval: int, minutes: int, slow_downs: int, folder: Path) -> tuple[float, float]:
    clock = FakeClock()
    with IdentityProvider(clock, interval=interval, code_lifetime=minutes * 60) as idp:
        idp.queue_token_faults(*[Fault.slow_down()] * slow_downs)
        client = client_for(idp, clock, folder)
        authorization = client.request_code()
        start = clock.monotonic()
        try:
            client.poll(authorization, tick=1.0)
        except CodeExpired:
            pass
        elapsed_min = (clock.monotonic() - start) / 60
        per_minute = idp.counts["token.device_code"] / elapsed_min
    return per_minute, 60 / interval


def approval_latency(interval: int, trials: int, folder: Path) -> list[float]:
    rng = random.Random(8628)
    latencies = []
    with IdentityProvider(SystemClock(), interval=interval) as idp:
        client = client_for(idp, SystemClock(), folder)
        for _ in range(trials):
            authorization = client.request_code()
            approved_at: list[float] = []

            def approve() -> None:
                time.sleep(interval * (1 + rng.random()))   # somewhere inside the 2nd interval
                approved_at.append(time.monotonic())
                idp.approve(authorization.user_code)

            threading.Thread(target=approve, daemon=True).start()
            client.poll(authorization)
            latencies.append((time.monotonic() - approved_at[0]) / interval)
    return latencies


def main() -> int:
    import logging
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--interval", type=int, default=1, help="real-clock interval, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("token requests per pending minute (FakeClock, 10 pending minutes)")
        for interval, slow in ((5, 0), (5, 3), (1, 0)):
            got, allowed = pending_minutes(interval, 10, slow, folder)
            print(f"  interval {interval} s, {slow} slow_down: {got:5.2f}/min, allowed {allowed:5.2f}/min, "
                  f"ratio {got / allowed:.3f}")
        lat = approval_latency(args.interval, args.trials, folder)
        print(f"approval -> token in hand (real clock, interval {args.interval} s, {args.trials} trials), "
              "as a fraction of the interval:")
        print(f"  mean {statistics.mean(lat):.3f}  median {statistics.median(lat):.3f}  "
              f"max {max(lat):.3f}  min {min(lat):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
