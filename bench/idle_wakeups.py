"""Wakeups per minute of an idle agent (signed in, reading every 60 s).

    python3 bench/idle_wakeups.py [--seconds S] [--no-mqtt] [--compare REF]

Side by side in one run: a bare ``import requests, paho.mqtt.client``
process that sleeps, a signed-in ``entra-agent run`` without MQTT, and (when
the ``mosquitto`` binary is installed) the same with MQTT to a local broker.
Counts voluntary context switches of all threads of each process (from
/proc/<pid>/task/*/status) over the same real *seconds*, and prints them per
minute, per thread. A switch is a thread going to sleep: a wakeup.

``--compare REF`` runs the same agents from git revision *REF* (``git
archive`` into a temporary directory) next to this tree's, all over the same
real seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import proc_status, running_agent  # noqa: E402


def per_thread(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                label = "main (the loop)" if task.name == str(pid) else name
                out[f"{label}[{task.name}]"] = int(line.split()[1])
    return out


def measure(pid: int, seconds: float) -> tuple[float, dict[str, float]]:
    before, threads_before = proc_status(pid), per_thread(pid)
    time.sleep(seconds)
    after, threads_after = proc_status(pid), per_thread(pid)
    scale = 60.0 / seconds
    total = (after["voluntary_ctxt_switches"] - before["voluntary_ctxt_switches"]) * scale
    threads = {k: (v - threads_before.get(k, 0)) * scale for k, v in threads_after.items()}
    return total, threads


def start_broker(tmp: Path) -> tuple[subprocess.Popen, int] | None:
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None


def export(ref: str, where: Path) -> Path:
    """The tree of git revision *ref* in *where* (``git archive``: no checkout touched)."""
    repo = Path(__file__).resolve().parent.parent
    where.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def report(label: str, total: float, threads: dict[str, float]) -> None:
    detail = ", ".join(f"{k} {v:.0f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v)
    print(f"{label:<42} {total:7.1f} wakeups/min   ({detail or 'none'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="real seconds to count over")
    parser.add_argument("--no-mqtt", action="store_true")
    parser.add_argument("--compare", metavar="REF", help="also run git revision REF's agent, side by side")
    args = parser.parse_args()

    bare = subprocess.Popen([sys.executable, "-c",
                             "import requests, paho.mqtt.client, time\nprint('ready', flush=True)\ntime.sleep(3600)"],
                            stdout=subprocess.PIPE, text=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        try:
            assert bare.stdout.readline().strip() == "ready"
            subjects = {"bare import, sleeping": bare.pid}
            trees: list[tuple[str, Path | None]] = [("", None)]
            if args.compare:
                trees.insert(0, (f"{args.compare}: ", export(args.compare, Path(tmp) / "compare")))
                trees[1] = ("this tree: ", None)
            for prefix, source in trees:
                # A broker per tree: two agents with one client id would
                # take the connection from each other all the time.
                broker = None if args.no_mqtt else start_broker(Path(tmp) / f"broker{len(subjects)}")
                if broker is not None:
                    stack.callback(lambda b=broker: (b[0].kill(), b[0].wait()))
                subjects[f"{prefix}entra-agent run, idle"] = stack.enter_context(
                    running_agent(interval=60, sensors=3, source=source)).pid
                if broker is not None:
                    subjects[f"{prefix}entra-agent run, idle, MQTT"] = stack.enter_context(
                        running_agent(interval=60, sensors=3, mqtt=("127.0.0.1", broker[1]),
                                      source=source)).pid
            time.sleep(3)                    # let start-up settle
            # Every process is measured over the same real interval.
            out: dict[str, tuple[float, dict[str, float]]] = {}
            jobs = [threading.Thread(target=lambda k=k, p=p: out.__setitem__(k, measure(p, args.seconds)))
                    for k, p in subjects.items()]
            for job in jobs:
                job.start()
            for job in jobs:
                job.join()
            results = [(label, *out[label]) for label in subjects]
        finally:
            bare.kill()
            bare.wait()
            bare.stdout.close()
    print(f"over {args.seconds:g} s of real time (sensors read every 60 s, one upload each):")
    for label, total, threads in results:
        report(label, total, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
