"""Steady-state memory of a running agent against the bare import of its two dependencies.

    python3 bench/service_memory.py [--settle S] [--mqtt HOST:PORT]

Side by side in one run: (1) a Python process that only does
``import requests, paho.mqtt.client`` and sleeps, (2) a real signed-in
``entra-agent run`` process (sandbox identity provider and receiver on
loopback, a few sensors every second, no display), measured after *settle*
seconds of uploading. Prints each VmRSS (from /proc/<pid>/status) and the
ratio agent / bare import. A bare interpreter is shown for scale.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import proc_status, running_agent  # noqa: E402


def rss_of(code: str, settle: float = 1.5) -> int:
    proc = subprocess.Popen([sys.executable, "-c", code + "\nimport time\nprint('ready', flush=True)\ntime.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(settle)
        return proc_status(proc.pid)["VmRSS"]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of running before measuring")
    parser.add_argument("--mqtt", metavar="HOST:PORT", help="also publish to this broker")
    args = parser.parse_args()
    mqtt = None
    if args.mqtt:
        host, _, port = args.mqtt.partition(":")
        mqtt = (host, int(port or 1883))

    bare_python = rss_of("pass")
    bare_imports = rss_of("import requests, paho.mqtt.client")
    with running_agent(interval=1, sensors=4, mqtt=mqtt) as agent:
        time.sleep(args.settle)
        first = proc_status(agent.pid)
        time.sleep(5)
        second = proc_status(agent.pid)
        received = len(agent.receiver.unique_ids)
    print(f"bare python:                      {bare_python / 1024:6.1f} MiB")
    print(f"import requests, paho.mqtt.client: {bare_imports / 1024:6.1f} MiB")
    print(f"entra-agent run (steady, {args.settle:g}+5 s, {received} readings sent, "
          f"{second['threads']} threads{', MQTT' if mqtt else ''}): {second['VmRSS'] / 1024:6.1f} MiB "
          f"(5 s earlier {first['VmRSS'] / 1024:.1f} MiB)")
    print(f"ratio agent / bare import: {second['VmRSS'] / bare_imports:.2f}")
    print(f"agent above bare import:   {(second['VmRSS'] - bare_imports) / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
