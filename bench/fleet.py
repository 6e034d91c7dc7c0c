"""A fleet of agents against one broker and one back end: does it stampede?

    python3 bench/fleet.py [--agents 1000] [--speed 5] [--interval 60] [--skip-mqtt] [--skip-http]

1,000 agents modelled in one process with the project's own classes, in two
parts that run one after the other and print their goals as figures:

MQTT (real Mosquitto, real sockets): one :class:`agent.status.StatusPublisher`
per agent, each with its own paho client and network thread, in worker
processes of 250 (paho's loop uses select(), which takes file descriptors
below 1024 only: one process cannot hold 1,000 clients). Their waits
(first-connect spread, reconnect policy, Home Assistant republish spread)
run on a clock sped up ``--speed`` times (a wait of 60 modelled seconds is
60/speed real seconds); the broker outages are timed on the same clock,
and every connect is stamped with it. Events: all start at once; broker down
30 s; broker down 70 s; Home Assistant's birth message; a clean stop of every
agent (the service's last publishes: "stopping", then its last real state).
Goals: no modelled second sees more than 5 % of the fleet connect; at the
end every retained ``availability`` is ``offline`` and every ``state`` the
last real state.

HTTP (the sandbox receiver, real sockets, one FakeClock): one
:class:`~agent.telemetry.outbox.Outbox` and one
:class:`~agent.telemetry.uploader.Uploader` per agent (shared HTTP session),
driven by the service's timers as ``agent/service/`` sets them (start-up
jitter for the first reading and the first upload, the upload gate from each
result). Time jumps from one due timer to the next, so an hour of fleet
time takes a minute or two; every POST really goes to the receiver, which
answers 503 during the outages (with no ``Retry-After``, with
``Retry-After: 0``, and with an HTTP-date at the outage's end, read against
its ``Date`` header) and is down around a site-wide power cut after which
every agent restarts with a backlog on disk. Goals: the back end never gets
more than 2x its steady request rate (in 10-second windows; the 1-second
peaks are printed beside the steady 1-second peak), and no agent makes more
than one request in any second.

Why two clocks: paho's sockets, keepalives and the broker run in real time,
so the MQTT part can only be sped up, not jumped; the HTTP part has no such
timers, so it runs on the FakeClock the tests use.
"""

from __future__ import annotations

import argparse
import collections
import email.utils
import heapq
import logging
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.clock import FakeClock  # noqa: E402
from agent.config import MqttConfig  # noqa: E402
from agent.sandbox.receiver import TelemetryReceiver  # noqa: E402
from agent.status import SensorInfo, StatusPublisher, reconnect_policy  # noqa: E402
from agent.telemetry.outbox import Outbox  # noqa: E402
from agent.telemetry.sensors import Reading, iso_utc, new_reading_id  # noqa: E402
from agent.telemetry.uploader import Uploader, start_jitter, upload_policy  # noqa: E402


def goal(name: str, value: str, ok: bool) -> bool:
    print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value}")
    return ok


# ===================================================================== MQTT

class ScaledClock:
    """Real time sped up *speed* times (monotonic in modelled seconds)."""

    def __init__(self, speed: float, t0: float | None = None) -> None:
        self.speed = speed
        self.t0 = time.monotonic() if t0 is None else t0   # CLOCK_MONOTONIC: shared by processes

    def monotonic(self) -> float:
        return (time.monotonic() - self.t0) * self.speed

    def time(self) -> float:
        return time.time()

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        real = max(0.0, seconds) / self.speed
        if event is None:
            time.sleep(real)
            return False
        return event.wait(real)

    def sleep_until(self, modelled: float) -> None:
        left = (modelled - self.monotonic()) / self.speed
        if left > 0:
            time.sleep(left)


class Mosquitto:
    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                               "persistence false\nmax_connections -1\nmax_queued_messages 10000\n"
                               f"log_dest file {folder / 'mosquitto.log'}\nlog_type error\n"
                               + ("user root\n" if os.geteuid() == 0 else ""))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def subscriber(port: int, topics: list[str]):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: dict[str, bytes] = {}
    times: list[str] = []
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
    client.on_subscribe = lambda *a: ready.set()

    def on_message(c, u, msg) -> None:
        got[msg.topic] = bytes(msg.payload)
        times.append(msg.topic)

    client.on_message = on_message
    client.connect("127.0.0.1", port, 60)
    client.loop_start()
    ready.wait(10)
    return client, got


def connects_per_second(stamps: list[float], start: float, end: float) -> int:
    counts = collections.Counter(int(t) for t in stamps if start <= t < end)
    return max(counts.values(), default=0)


#: paho's network loop uses select(), which takes file descriptors below
#: 1024 only, and each client holds three (its socket and a wake-up pair):
#: so the publishers are spread over worker processes of this many each.
PER_PROCESS = 250


def mqtt_worker(first: int, count: int, port: int, t0: float, speed: float) -> int:
    """One worker process: *count* StatusPublishers, driven by commands on stdin.

    Prints ``up <modelled s>`` / ``down <modelled s>`` for every connection
    change, ``ready`` and ``closed`` for the orchestrator.
    """
    logging.basicConfig(level=logging.CRITICAL)
    clock = ScaledClock(speed, t0)
    out = threading.Lock()

    def say(text: str) -> None:
        with out:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    settings = MqttConfig(host="127.0.0.1", port=port, topic_prefix="fleet", homeassistant_discovery=True)
    pubs = []
    for i in range(first, first + count):
        pub = StatusPublisher(settings, device_id=f"dev-{i:04d}", sensors=[SensorInfo("uptime", "s")],
                              on_connection_change=lambda up: say(f"{'up' if up else 'down'} "
                                                                  f"{clock.monotonic():.3f}"),
                              first_connect_jitter=60.0, reconnect=reconnect_policy(60.0),
                              clock=clock, rng=random.Random(i))
        pub.publish_state({"state": "signed_in", "device_id": pub.device_id})
        pub.publish_readings({"uptime": 1.0}, {"uptime": "s"})
        pubs.append(pub)
    say("ready")
    for line in sys.stdin:
        if line.strip() == "start":
            for pub in pubs:                 # all at once
                pub.start()
        elif line.strip() == "stop":
            # A clean stop, as Service._shutdown does it: "stopping", then
            # the last real state, then close() (offline, disconnect).
            for pub in pubs:
                pub.publish_state({"state": "stopping", "device_id": pub.device_id})
            threads = []
            for pub in pubs:
                def stop(p: StatusPublisher = pub) -> None:
                    p.publish_state({"state": "signed_in", "device_id": p.device_id})
                    p.close()
                threads.append(threading.Thread(target=stop))
                threads[-1].start()
            for th in threads:
                th.join(30)
            say("closed")
            return 0
    return 0


def run_mqtt(agents: int, speed: float, folder: Path) -> bool:
    print(f"MQTT: {agents} StatusPublishers in {-(-agents // PER_PROCESS)} processes, real Mosquitto, "
          f"clock x{speed:g} (connect_spread 60 s, reconnect_spread 60 s)")
    broker = Mosquitto(folder)
    broker.start()
    clock = ScaledClock(speed)
    stamps: list[float] = []
    lock = threading.Lock()
    connected = [0]
    closed = threading.Semaphore(0)
    ready = threading.Semaphore(0)
    workers = []
    for first in range(0, agents, PER_PROCESS):
        count = min(PER_PROCESS, agents - first)
        workers.append(subprocess.Popen(
            [sys.executable, __file__, "--mqtt-worker", str(first), str(count), str(broker.port),
             repr(clock.t0), str(speed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))

    def read(proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            kind, _, value = line.strip().partition(" ")
            with lock:
                if kind == "up":
                    stamps.append(float(value))
                    connected[0] += 1
                elif kind == "down":
                    connected[0] -= 1
            if kind == "ready":
                ready.release()
            elif kind == "closed":
                closed.release()

    for proc in workers:
        threading.Thread(target=read, args=(proc,), daemon=True).start()
    for _ in workers:
        if not ready.acquire(timeout=120):
            raise SystemExit("an MQTT worker did not start")

    def tell(command: str) -> None:
        for proc in workers:
            proc.stdin.write(command + "\n")
            proc.stdin.flush()

    def all_up(timeout_modelled: float) -> float:
        deadline = clock.monotonic() + timeout_modelled
        while clock.monotonic() < deadline:
            with lock:
                if connected[0] >= agents:
                    return clock.monotonic()
            time.sleep(0.05)
        return float("nan")

    def report(name: str, since: float, done: float) -> bool:
        with lock:
            peak = connects_per_second(stamps, since, done + 1 if done == done else float("inf"))
            first = min((t for t in stamps if t >= since), default=float("nan")) - since
            up = connected[0]
        ok = done == done and peak <= agents * 0.05
        return goal(name, f"{peak} of {agents} ({100 * peak / agents:.1f} %; goal <= 5 %), "
                          f"first after {first:.1f} s, all {up} up after {done - since:.0f} s", ok)

    ok = True
    try:
        t = clock.monotonic()
        tell("start")
        ok &= report("start, all at once: most connects in one second", t, all_up(400))
        for outage in (30.0, 70.0):
            with lock:
                stamps.clear()
            broker.stop()
            down = clock.monotonic()
            clock.sleep_until(down + outage)
            broker.start()
            back = clock.monotonic()
            ok &= report(f"broker down {outage:.0f} s: most reconnects in one second", back,
                         all_up(900))

        # Home Assistant restarts: every device republishes, spread over a few seconds.
        ha, _ = subscriber(broker.port, ["homeassistant/#"])
        arrivals: list[float] = []
        ha.on_message = lambda c, u, m: arrivals.append(clock.monotonic()) \
            if m.topic.endswith("/config") and not m.retain else None
        birth = clock.monotonic()
        ha.publish("homeassistant/status", "online", qos=1)
        clock.sleep_until(birth + 60)
        per_second = collections.Counter(int(a - birth) for a in arrivals)
        devices = len(arrivals) / 2
        most = max(per_second.values(), default=0) / 2
        ok &= goal("Home Assistant birth: the republish is spread",
                   f"{devices:.0f} devices over {(max(arrivals) - birth) if arrivals else 0:.1f} s, "
                   f"at most {most:.0f} in one second ({100 * most / agents:.1f} %)",
                   devices >= agents * 0.99 and most <= agents * 0.5)
        ha.loop_stop()
        ha.disconnect()

        tell("stop")
        for _ in workers:
            closed.acquire(timeout=120)
        check, retained = subscriber(broker.port, ["fleet/+/availability", "fleet/+/state"])
        time.sleep(2)
        check.loop_stop()
        check.disconnect()
        offline = sum(1 for k, v in retained.items() if k.endswith("/availability") and v == b"offline")
        last = sum(1 for k, v in retained.items() if k.endswith("/state") and b'"signed_in"' in v)
        ok &= goal("after a clean stop: retained availability offline / state the last real state",
                   f"{offline} / {last} of {agents}", offline == agents and last == agents)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        broker.stop()
    return ok


# ===================================================================== HTTP

class OutageReceiver(TelemetryReceiver):
    """The sandbox receiver, answering 503 in the bench's outages (on its modelled clock)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(token_validator=lambda token: "bench" if token == "bench-token" else None)
        self.clock = clock
        self.outage: tuple[float, float, str] | None = None   # start, end (monotonic), Retry-After form
        self.posts: list[tuple[float, str]] = []              # (modelled second, device) per POST

    def _decide(self, authorization, raw, encoding):
        now = self.clock.monotonic()
        if self.outage is not None and self.outage[0] <= now < self.outage[1]:
            self._requests += 1
            start, end, form = self.outage
            headers: dict[str, str] = {}
            if form == "zero":
                headers["Retry-After"] = "0"
            elif form == "date":
                # The outage's end as an HTTP-date in the server's own time
                # base (its Date header is real time).
                headers["Retry-After"] = email.utils.formatdate(time.time() + (end - now), usegmt=True)
            return 503, {"error": "unavailable"}, headers
        return super()._decide(authorization, raw, encoding)


class ModelledAgent:
    """One agent's outbox, uploader and the service's timers for them."""

    def __init__(self, device: str, folder: Path, url: str, clock: FakeClock, session, interval: float,
                 rng: random.Random) -> None:
        self.device = device
        self.folder = folder
        self.url, self.clock, self.session, self.interval, self.rng = url, clock, session, interval, rng
        self.boot()

    def boot(self) -> None:
        """What Service.start() does for these parts (a power cut: everything in memory is gone)."""
        self.outbox = Outbox(self.folder / "outbox.sqlite3")
        self.uploader = Uploader(self.url, device_id=self.device, token=lambda: "bench-token",
                                 refresh_token=lambda: "bench-token", clock=self.clock,
                                 session=self.session, rng=self.rng,
                                 backoff=upload_policy(self.interval))
        now = self.clock.monotonic()
        jitter = start_jitter(self.device, self.interval)
        self.next_read = now + jitter
        self.next_upload = now + jitter          # Service._start_not_before
        self.wanted = True
        self.version = 0


def run_http(agents: int, interval: float, folder: Path) -> bool:
    import requests

    print(f"HTTP: {agents} agents (Outbox + Uploader + the service's timers), sandbox receiver, "
          f"FakeClock, one reading every {interval:g} s")
    clock = FakeClock(start=0.0)
    rx = OutageReceiver(clock).start()
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=4))
    fleet = [ModelledAgent(f"dev-{i:04d}", folder / f"a{i}", rx.url, clock, session, interval,
                           random.Random(i)) for i in range(agents)]
    for agent in fleet:
        agent.folder.mkdir()
    queue: list[tuple[float, int, int, str, int]] = []
    seq = 0

    def schedule(at: float, index: int, kind: str) -> None:
        nonlocal seq
        agent = fleet[index]
        if kind == "upload":
            agent.version += 1
        seq += 1
        heapq.heappush(queue, (at, seq, index, kind, agent.version))

    for i, agent in enumerate(fleet):
        schedule(agent.next_read, i, "read")

    outages = [(300.0, 360.0, "none"), (600.0, 660.0, "zero"), (900.0, 960.0, "date"),
               (1140.0, 1260.0, "none")]
    power_cut = 1200.0
    end = 1560.0
    cut_done = False
    per_agent_second: collections.Counter = collections.Counter()

    while queue:
        at, _, index, kind, version = heapq.heappop(queue)
        if at >= end:
            break
        if not cut_done and at >= power_cut:
            cut_done = True
            clock.advance(power_cut - clock.monotonic())
            queue.clear()
            for i, agent in enumerate(fleet):
                # (Failed uploads already spilled what was in memory; close()
                # only lets go of the file before the "new boot" opens it.)
                agent.outbox.close()
                agent.boot()
                schedule(agent.next_read, i, "read")
                if agent.outbox.depth():
                    schedule(agent.next_upload, i, "upload")
            continue
        if at > clock.monotonic():
            clock.advance(at - clock.monotonic())
        now = clock.monotonic()
        rx.outage = next(((s, e, f) for s, e, f in outages if s <= now < e), None)
        agent = fleet[index]
        if kind == "read":
            wall = clock.time()
            agent.outbox.add([Reading(new_reading_id(wall), "uptime", now, "s", iso_utc(wall))])
            agent.next_read += interval
            schedule(agent.next_read, index, "read")
            agent.wanted = True
            schedule(max(now, agent.next_upload), index, "upload")
            continue
        if version != agent.version or not agent.wanted or now < agent.next_upload:
            continue                                  # a superseded timer
        before = rx.requests
        result = agent.uploader.upload(agent.outbox, 500)
        if rx.requests > before:
            rx.posts.append((now, agent.device))
            per_agent_second[(agent.device, int(now))] += rx.requests - before
        # Service._on_upload / _upload_failed:
        if result.error:
            agent.next_upload = now + float(result.retry_after or 0.0)
        else:
            if not result.accepted and (result.attempted or result.retry_after is None):
                agent.wanted = False
            agent.next_upload = now + (result.retry_after or 0.0)
        if agent.wanted and agent.outbox.depth():
            schedule(agent.next_upload, index, "upload")
    for agent in fleet:
        agent.outbox.close()
        agent.uploader.close()
    session.close()
    rx.stop()

    seconds = collections.Counter(int(t) for t, _ in rx.posts)

    def window_peak(start: float, stop: float, width: int) -> float:
        best = 0.0
        for s in range(int(start), int(stop) - width + 1):
            best = max(best, sum(seconds.get(x, 0) for x in range(s, s + width)) / width)
        return best

    steady = sum(seconds.get(s, 0) for s in range(120, 300)) / 180
    steady_peak_1s = max(seconds.get(s, 0) for s in range(120, 300))
    ok = True
    print(f"  steady: {steady:.1f} POST/s (fleet/interval = {agents / interval:.1f}), "
          f"peak 10 s {window_peak(120, 300, 10):.1f}/s, peak 1 s {steady_peak_1s}")
    names = {"none": "503 without Retry-After", "zero": "503 with Retry-After: 0",
             "date": "503 with Retry-After: <HTTP-date of the outage's end>"}
    for start, stop, form in outages:
        label = names[form] if stop - start == 60 else \
            "back end down 120 s, power cut of the whole fleet at its middle, restart with backlogs"
        peak10 = window_peak(start, stop + 240, 10)
        peak1 = max(seconds.get(s, 0) for s in range(int(start), int(stop) + 240))
        ok &= goal(f"{label} ({start:.0f}-{stop:.0f} s)",
                   f"peak {peak10:.1f} POST/s over 10 s = {peak10 / steady:.2f}x steady "
                   f"(goal <= 2x); peak 1 s {peak1} vs steady's {steady_peak_1s}",
                   peak10 <= 2 * steady)
    worst = max(per_agent_second.values(), default=0)
    ok &= goal("most requests one agent made in one second", f"{worst} (goal <= 1)", worst <= 1)
    print(f"  {rx.requests} POSTs, {len(rx.unique_ids)} readings accepted, {rx.duplicates} repeats")
    return ok


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--mqtt-worker"]:
        first, count, port = (int(v) for v in argv[1:4])
        return mqtt_worker(first, count, port, float(argv[4]), float(argv[5]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--speed", type=float, default=5.0, help="MQTT clock speed-up (default 5)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between readings")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
                        help="where the HTTP part's outboxes live (default /dev/shm: no SD card, "
                             "no fsync cost in the figures)")
    parser.add_argument("--skip-mqtt", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.agents + 256)), hard))
    started = time.monotonic()
    ok = True
    with tempfile.TemporaryDirectory(prefix="entra-agent-fleet-", dir=args.dir) as tmp:
        if not args.skip_mqtt:
            ok &= run_mqtt(args.agents, args.speed, Path(tmp))
        if not args.skip_http:
            (Path(tmp) / "http").mkdir()
            ok &= run_http(args.agents, args.interval, Path(tmp) / "http")
    print(f"{'all goals met' if ok else 'GOALS MISSED'} in {time.monotonic() - started:.0f} s real time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
