"""What a hostile identity provider costs: plain ``requests`` vs ``agent.auth.http``.

Side by side in one run, against one loopback server (tests/hostile_idp.py):

* a 256 KB gzip body that inflates to 256 MB: peak RSS of a child process
  that reads it the way the client used to (``session.post(...).json()``),
  and of one that uses :func:`agent.auth.http.request`;
* a token endpoint that trickles a 120-byte answer at 0.1 s a byte: wall
  time until each client gives up or finishes (plain: a 10 s per-read
  timeout; ours: a 1 s overall deadline).

Run: ``.venv/bin/python bench/hostile_answers.py``
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hostile_idp import HostileProvider, Reply, gzip_bomb  # noqa: E402


def child_peak_mb(code: str, url: str) -> float:
    """Peak RSS (MB) of a child Python running *code* with URL set."""
    pid = os.fork()
    if pid == 0:
        try:
            exec(code, {"URL": url})
        except BaseException:   # noqa: BLE001 - the child only reports its peak
            pass
        os._exit(0)
    _, _, usage = os.wait4(pid, 0)
    return usage.ru_maxrss / 1024


PLAIN = """
import requests
try:
    requests.Session().post(URL, data={"device_code": "x"}, timeout=10).json()
except ValueError:
    pass
"""
OURS = """
from agent.auth.http import new_session, request
request(new_session("bench"), "POST", URL, what="the token endpoint", deadline=10, data={})
"""


def main() -> None:
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with HostileProvider() as server:
        url = f"{server.origin}/token"
        bomb = gzip_bomb()
        server.default("/token", Reply(200, bomb, (("Content-Encoding", "gzip"),)))
        plain = child_peak_mb(PLAIN, url)
        ours = child_peak_mb(OURS, url)
        print(f"gzip bomb ({len(bomb) // 1024} KB -> 256 MB): peak RSS plain requests {plain:.0f} MB, "
              f"agent.auth.http {ours:.0f} MB (parent before fork {baseline:.0f} MB); "
              f"ratio {plain / ours:.1f}x")

        server.default("/token", Reply(200, b'{"access_token": "' + b"x" * 100 + b'"}',
                                       trickle=0.1))
        import requests

        from agent.auth.errors import AnswerTooSlow
        from agent.auth.http import new_session, request
        start = time.monotonic()
        requests.Session().post(url, data={}, timeout=10).content
        plain_s = time.monotonic() - start
        start = time.monotonic()
        try:
            request(new_session("bench"), "POST", url, what="the token endpoint", deadline=1.0,
                    data={})
        except AnswerTooSlow:
            pass
        ours_s = time.monotonic() - start
        print(f"trickled answer (120 bytes at 0.1 s each): plain requests (timeout=10 per read) "
              f"{plain_s:.1f} s, agent.auth.http (deadline 1 s) {ours_s:.1f} s; "
              f"ratio {plain_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
