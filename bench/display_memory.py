"""What the display path costs in memory (and time per frame), measured side by side.

Each case runs in its own fresh Python process and reports its peak resident
set size (``ru_maxrss``) after doing its work:

- ``python``: an empty interpreter, for scale;
- ``console``: ``import agent`` and a ConsolePresenter showing every screen;
- ``oled``: the same plus ``hardware.display.open_presenter`` on luma's dummy
  SSD1306 (128x64, 1-bit), rendering every screen and a minute of sign-in
  countdown;
- ``lcd``: the same on a dummy 320x240 colour panel (an ILI9341 HAT).

Run: ``python3 bench/display_memory.py`` (prints MB and ratios to ``console``).
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = {
    "python": "pass",
    "console": """
import io, agent
from agent.ui import ConsolePresenter
from hardware.screens import SAMPLES
p = ConsolePresenter(io.StringIO())
for v in SAMPLES.values(): p.show(v)
""",
    "oled": """
import io, agent
from dataclasses import replace
from agent.clock import FakeClock
from hardware.display import open_presenter
from hardware.screens import SAMPLES
clock = FakeClock()
p = open_presenter({"driver": "dummy", "width": 128, "height": 64, "mode": "1"}, clock=clock)
for v in SAMPLES.values(): p.show(v)
t = time.perf_counter()
for s in range(60):                      # a minute of countdown: a new frame each second
    p.show(replace(SAMPLES["sign-in"], seconds_left=899 - s)); clock.advance(1)
frame_ms = (time.perf_counter() - t) / 60 * 1000
""",
    "lcd": """
import io, agent
from dataclasses import replace
from agent.clock import FakeClock
from hardware.display import open_presenter
from hardware.screens import SAMPLES
clock = FakeClock()
p = open_presenter({"driver": "dummy", "width": 320, "height": 240, "mode": "RGB"}, clock=clock)
for v in SAMPLES.values(): p.show(v)
t = time.perf_counter()
for s in range(60):
    p.show(replace(SAMPLES["sign-in"], seconds_left=899 - s)); clock.advance(1)
frame_ms = (time.perf_counter() - t) / 60 * 1000
""",
}

_WRAPPER = """
import json, resource, time
frame_ms = None
{body}
print(json.dumps({{"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "frame_ms": frame_ms}}))
"""


def measure(body: str) -> dict:
    code = _WRAPPER.format(body=body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    results = {name: measure(body) for name, body in CASES.items()}
    base = results["console"]["maxrss_kb"]
    print(f"{'case':<8} {'peak RSS':>10} {'x console':>10} {'+MB':>7} {'ms/frame':>9}")
    for name, r in results.items():
        mb = r["maxrss_kb"] / 1024
        extra = (r["maxrss_kb"] - base) / 1024
        frame = "" if r["frame_ms"] is None else f"{r['frame_ms']:.1f}"
        print(f"{name:<8} {mb:>8.1f}MB {r['maxrss_kb'] / base:>10.2f} {extra:>+7.1f} {frame:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
