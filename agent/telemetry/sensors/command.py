"""The command sensor: a program's stdout (a number or JSON), bounded in time,
its whole process group killed when it hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Mapping

from agent.telemetry.sensors.base import BuiltinSensor, Option, SensorError, is_value

__all__ = ["CommandSensor", "STDERR_QUOTE_MAX", "KILL_GRACE"]

#: Most characters of a program's stderr quoted in a failure line.
STDERR_QUOTE_MAX = 160

#: Seconds to wait for a killed command's pipes to close.
KILL_GRACE = 2.0


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last[:STDERR_QUOTE_MAX]


class CommandSensor(BuiltinSensor):
    """Runs a program (no shell) and reads its stdout.

    Accepted output: a number (``41.5``), JSON ``{"value": 41.5}``, or JSON
    ``{"moisture": 41.5, "temperature": 18.2}`` (several readings, named
    ``<name>.<key>``). The program runs in its own process group and the
    whole group is killed after ``timeout`` seconds, so a hung helper and
    its children never pile up.
    """

    device_class = None
    multi = None                             # a number or a JSON object: its output tells

    OWN_UNIT = False
    KEY_UNITS = True
    OPTIONS = (Option.command("command", "a non-empty list of texts (the program and its arguments)"),
               Option.number("timeout", "a number of seconds > 0 and <= 300", 0, 300, default=5.0,
                             low_inclusive=False))

    def __init__(self, name: str, command: list[str], timeout: float = 5.0,
                 unit: str | None = None, key_units: Mapping[str, str] | None = None) -> None:
        if not command:
            raise ValueError("command must not be empty")
        self.name = name
        self.unit = unit
        self.key_units = dict(key_units or {})
        self.command = list(command)
        self.timeout = timeout
        self.last_pid: int | None = None  # for tests and diagnostics

    def read(self) -> float | dict[str, float]:
        program = self.command[0]
        try:
            process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            )
        except FileNotFoundError:
            raise SensorError(f"{self.name}: command not found: {program}",
                              "fix sensors.command in the config") from None
        except PermissionError:
            raise SensorError(f"{self.name}: {program} is not executable",
                              f"run: chmod +x {program}") from None
        except OSError as exc:
            raise SensorError(f"{self.name}: cannot run {program}: "
                              f"{exc.strerror or type(exc).__name__}") from None
        self.last_pid = process.pid
        try:
            out, err = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            raise SensorError(f"{self.name}: {program} did not finish within {self.timeout:g} s "
                              f"and was killed") from None
        finally:
            # Children that outlive the program (it exited, they did not)
            # must not linger either.
            self._kill_group(process.pid)
        if process.returncode != 0:
            why = _one_line(err.decode("utf-8", "replace"))
            status = (f"was killed by signal {-process.returncode}" if process.returncode < 0
                      else f"exited with status {process.returncode}")
            raise SensorError(f"{self.name}: {program} {status}" + (f": {why}" if why else ""))
        return self._parse(out.decode("utf-8", "replace"))

    @staticmethod
    def _kill_group(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        self._kill_group(process.pid)
        try:
            process.communicate(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            # A grandchild that left our group still holds the pipes: stop
            # waiting for them, but reap our own child.
            process.kill()
            process.wait(timeout=KILL_GRACE)

    def _parse(self, text: str) -> float | dict[str, float]:
        text = text.strip()
        if not text:
            raise SensorError(f"{self.name}: {self.command[0]} printed nothing",
                              'it must print a number or JSON like {"value": 1.5}')
        try:
            data = json.loads(text)
        except ValueError:
            data = text
        if isinstance(data, str):
            try:
                data = float(data)
            except ValueError:
                raise SensorError(f"{self.name}: {self.command[0]} printed neither a number "
                                  f"nor JSON: {_one_line(text)[:40]!r}") from None
        if is_value(data):
            return float(data)
        if isinstance(data, dict):
            if "value" in data and is_value(data["value"]):
                return float(data["value"])
            if data and all(isinstance(k, str) and is_value(v) for k, v in data.items()):
                return {k: float(v) for k, v in data.items()}
        raise SensorError(f"{self.name}: {self.command[0]} printed JSON that holds no numbers",
                          'print a number, {"value": x} or {"name": x, ...}')
