"""agent.telemetry.sensors: built-ins on fake /sys and /proc trees, real
subprocesses for the command sensor, plugins through a real entry point."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from agent.clock import FakeClock
from agent.config import SensorConfig
from agent.errors import ConfigError
from agent.telemetry.sensors import (
    DS18B20,
    CommandSensor,
    CpuTemperature,
    DiskUsage,
    LoadAverage,
    Memory,
    Reading,
    SensorError,
    Uptime,
    build_sensors,
    iso_utc,
    new_reading_id,
    read_all,
)

PY = sys.executable

MEMINFO = """MemTotal:         443000 kB
MemFree:           50000 kB
MemAvailable:     221500 kB
Buffers:           10000 kB
Cached:           100000 kB
"""

W1_GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
W1_BAD_CRC = "72 01 4b 46 7f ff 0e 10 57 : crc=00 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
W1_POWER_ON = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"


def fake_file(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def gone(pid: int) -> bool:
    """True when *pid* no longer runs (reaped, or a zombie of someone else)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return status == "Z"


# ---------------------------------------------------------------- readings

def test_reading_ids_are_unique_and_time_ordered():
    ids = [new_reading_id(1_800_000_000.0 + i / 1000) for i in range(200)]
    assert len(set(ids)) == 200
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert ids == sorted(ids)
    assert new_reading_id(1.0) < new_reading_id(2.0)


def test_iso_utc():
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_800_000_000.25) == "2027-01-15T08:00:00.250Z"


def test_read_all_stamps_with_the_injected_clock(tmp_path):
    clock = FakeClock(wall=1_800_000_000.0)
    temp = fake_file(tmp_path, "thermal_zone0/temp", "48312\n")
    sensors = [CpuTemperature(path=temp), Uptime(path=fake_file(tmp_path, "uptime", "12345.67 40000.1\n"))]
    readings, failures = read_all(sensors, clock)
    assert failures == []
    assert [(r.sensor, r.value, r.unit, r.time) for r in readings] == [
        ("cpu_temperature", 48.312, "°C", "2027-01-15T08:00:00.000Z"),
        ("uptime", 12345.67, "s", "2027-01-15T08:00:00.000Z"),
    ]
    assert readings[0].id[:12] == f"{1_800_000_000_000:012x}"
    assert Reading.from_json(readings[0].as_json()) == readings[0]


def test_a_failing_sensor_is_skipped_not_fatal(tmp_path, caplog):
    caplog.set_level("DEBUG", logger="agent.telemetry.sensors")   # the service logs changes; this logs each skip

    class Broken:
        name = "broken"
        unit = None

        def read(self):
            raise ZeroDivisionError("plugin bug")

    class NotFinite:
        name = "nan"
        unit = None

        def read(self):
            return float("nan")

    sensors = [CpuTemperature(path=tmp_path / "missing"), Broken(), NotFinite(),
               Uptime(path=fake_file(tmp_path, "uptime", "5.0 1.0\n"))]
    readings, failures = read_all(sensors, FakeClock())
    assert [r.sensor for r in readings] == ["uptime"]
    names = [name for name, _ in failures]
    assert names == ["cpu_temperature", "broken", "nan"]
    for _, reason in failures:
        assert "\n" not in reason
    assert "does not exist" in failures[0][1] and str(tmp_path / "missing") in failures[0][1]
    assert "ZeroDivisionError: plugin bug" in failures[1][1]
    assert "not a finite number" in failures[2][1]
    assert "sensor skipped" in caplog.text


# ---------------------------------------------------------------- built-ins

def test_cpu_temperature(tmp_path):
    path = fake_file(tmp_path, "temp", "51234\n")
    assert CpuTemperature(path=path).read() == 51.234
    path.write_text("garbage\n")
    with pytest.raises(SensorError, match="does not hold a number"):
        CpuTemperature(path=path).read()
    with pytest.raises(SensorError, match="thermal zone"):
        CpuTemperature(path=tmp_path / "none").read()


@pytest.mark.parametrize("period, expected", [(1, 0.52), (5, 0.58), (15, 0.59)])
def test_load_average(tmp_path, period, expected):
    path = fake_file(tmp_path, "loadavg", "0.52 0.58 0.59 1/245 1234\n")
    assert LoadAverage(period=period, path=path).read() == expected


def test_load_average_of_this_machine():
    # /proc is real here: a number, not a failure
    value = LoadAverage().read()
    assert value >= 0


def test_memory(tmp_path):
    path = fake_file(tmp_path, "meminfo", MEMINFO)
    assert Memory(path=path).read() == 50.0
    mb = Memory(report="available_mb", path=path)
    assert mb.read() == round(221500 * 1024 / 1e6, 1) and mb.unit == "MB"
    # an old kernel without MemAvailable: free + buffers + cache
    path.write_text(MEMINFO.replace("MemAvailable:     221500 kB\n", ""))
    assert Memory(path=path).read() == round(100 * 160000 / 443000, 2)
    path.write_text("nothing useful\n")
    with pytest.raises(SensorError, match="MemTotal"):
        Memory(path=path).read()


def test_disk_usage(tmp_path):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    percent = DiskUsage(path=tmp_path).read()
    assert 0 <= percent <= 100
    assert abs(percent - 100 * usage.used / (usage.used + usage.free)) < 1
    assert DiskUsage(report="free_mb", path=tmp_path).read() > 0
    with pytest.raises(SensorError, match="does not exist"):
        DiskUsage(path=tmp_path / "nope").read()


def test_uptime(tmp_path):
    assert Uptime(path=fake_file(tmp_path, "uptime", "350735.47 234388.90\n")).read() == 350735.47
    with pytest.raises(SensorError, match="is empty"):
        Uptime(path=fake_file(tmp_path, "uptime", "")).read()


def test_ds18b20_one_device(tmp_path):
    fake_file(tmp_path, "28-0316a2795eff/w1_slave", W1_GOOD)
    fake_file(tmp_path, "w1_bus_master1/w1_master_name", "w1_bus_master1\n")
    assert DS18B20(device="28-0316a2795eff", base_dir=tmp_path).read() == 23.125
    # without a device id: every 28-* folder, by id
    assert DS18B20(base_dir=tmp_path).read() == {"28-0316a2795eff": 23.125}


def test_ds18b20_crc_and_power_on_value(tmp_path):
    fake_file(tmp_path, "28-000000000001/w1_slave", W1_BAD_CRC)
    fake_file(tmp_path, "28-000000000002/w1_slave", W1_POWER_ON)
    with pytest.raises(SensorError, match="CRC"):
        DS18B20(device="28-000000000001", base_dir=tmp_path).read()
    with pytest.raises(SensorError, match="power-on value"):
        DS18B20(device="28-000000000002", base_dir=tmp_path).read()
    with pytest.raises(SensorError, match="none of 2"):
        DS18B20(base_dir=tmp_path).read()
    # one good thermometer among bad ones still reports
    fake_file(tmp_path, "28-000000000003/w1_slave", W1_GOOD)
    assert DS18B20(base_dir=tmp_path).read() == {"28-000000000003": 23.125}


def test_ds18b20_none_present(tmp_path):
    with pytest.raises(SensorError, match="no DS18B20.*dtoverlay=w1-gpio"):
        DS18B20(base_dir=tmp_path).read()


def test_several_values_become_named_readings(tmp_path):
    fake_file(tmp_path, "28-000000000001/w1_slave", W1_GOOD)
    fake_file(tmp_path, "28-000000000002/w1_slave", W1_GOOD.replace("t=23125", "t=-1500"))
    readings, failures = read_all([DS18B20(name="air", base_dir=tmp_path)], FakeClock())
    assert failures == []
    assert {(r.sensor, r.value) for r in readings} == {
        ("air.28-000000000001", 23.125), ("air.28-000000000002", -1.5)}
    assert len({r.id for r in readings}) == 2


# ---------------------------------------------------------------- command

@pytest.mark.parametrize("stdout, expected", [
    ("41.5\n", 41.5),
    ("  7 ", 7.0),
    ('{"value": 3}', 3.0),
    ('{"moisture": 41, "temperature": 18.5}', {"moisture": 41.0, "temperature": 18.5}),
])
def test_command_outputs(stdout, expected):
    sensor = CommandSensor("soil", [PY, "-c", f"import sys; sys.stdout.write({stdout!r})"], timeout=20)
    assert sensor.read() == expected


@pytest.mark.parametrize("script, message", [
    ("print('wet')", "printed neither a number nor JSON"),
    ("print('')", "printed nothing"),
    ("print('{\"a\": \"b\"}')", "holds no numbers"),
    ("print('true')", "holds no numbers"),
    ("import sys; print('sensor not found on bus\\nline two', file=sys.stderr); sys.exit(3)",
     "exited with status 3: line two"),
])
def test_command_failures_are_one_line(script, message):
    sensor = CommandSensor("soil", [PY, "-c", script], timeout=20)
    with pytest.raises(SensorError) as info:
        sensor.read()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_command_not_found(tmp_path):
    with pytest.raises(SensorError, match="command not found: /nonexistent/read-soil"):
        CommandSensor("soil", ["/nonexistent/read-soil"]).read()
    script = fake_file(tmp_path, "read-soil", "#!/bin/sh\necho 1\n")
    script.chmod(0o644)
    with pytest.raises(SensorError, match="not executable"):
        CommandSensor("soil", [str(script)]).read()


def test_hung_command_and_its_children_are_killed(tmp_path):
    pids = tmp_path / "pids"
    # The program starts a child that would outlive it, records both pids, then hangs.
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(30)\n"
    )
    sensor = CommandSensor("hung", [PY, "-c", script], timeout=1.5)
    readings, failures = read_all([sensor], FakeClock())
    assert readings == []
    assert failures and failures[0][0] == "hung"
    assert "did not finish within 1.5 s and was killed" in failures[0][1]
    program, child = (int(p) for p in pids.read_text().split())
    assert program == sensor.last_pid
    # The kernel may take a moment to tear the orphan down after SIGKILL.
    deadline = time.monotonic() + 5
    while not (gone(program) and gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(program) and gone(child)


def test_command_killed_by_signal():
    sensor = CommandSensor("x", [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
                           timeout=20)
    with pytest.raises(SensorError, match="was killed by signal 15"):
        sensor.read()


# ---------------------------------------------------------------- building

def test_build_sensors_from_config(tmp_path):
    temp = fake_file(tmp_path, "temp", "40000\n")
    sensors = build_sensors([
        SensorConfig("cpu_temperature", "cpu", {"path": str(temp)}),
        SensorConfig("memory", "mem", {"report": "available_mb", "path": str(fake_file(tmp_path, "m", MEMINFO))}),
        SensorConfig("command", "soil", {"command": [PY, "-c", "print(12)"], "timeout": 20.0}, unit="%"),
        SensorConfig("load_average", "load", {"period": 15,
                                              "path": str(fake_file(tmp_path, "l", "1 2 3 1/1 1\n"))}),
    ])
    readings, failures = read_all(sensors, FakeClock())
    assert failures == []
    assert [(r.sensor, r.value, r.unit) for r in readings] == [
        ("cpu", 40.0, "°C"), ("mem", 226.8, "MB"), ("soil", 12.0, "%"), ("load", 3.0, None)]


def test_unknown_type_lists_known_ones():
    with pytest.raises(ConfigError) as info:
        build_sensors([SensorConfig("thermometer", "t")])
    message = str(info.value)
    assert "unknown type 'thermometer'" in message
    for kind in ("cpu_temperature", "command", "ds18b20", "uptime"):
        assert kind in message


def install_plugin(root: Path, monkeypatch, body: str, name: str = "bme280") -> None:
    """A real (tiny) installed distribution with an entra_agent.sensors entry point."""
    root.mkdir(exist_ok=True)
    (root / "bme_plugin.py").write_text(body)
    info = root / "bme_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bme-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[entra_agent.sensors]\n{name} = bme_plugin:factory\n")
    monkeypatch.syspath_prepend(str(root))
    sys.modules.pop("bme_plugin", None)


def test_plugin_sensor_through_entry_point(tmp_path, monkeypatch):
    install_plugin(tmp_path / "site", monkeypatch, (
        "class Bme:\n"
        "    unit = 'hPa'\n"
        "    def __init__(self, config):\n"
        "        self.name = config.name\n"
        "        self.address = config.options['address']\n"
        "    def read(self):\n"
        "        return {'pressure': 1013.25, 'humidity': 40.0}\n"
        "def factory(config):\n"
        "    return Bme(config)\n"
    ))
    sensors = build_sensors([SensorConfig("bme280", "outside", {"address": 118})])
    assert sensors[0].address == 118
    readings, failures = read_all(sensors, FakeClock())
    assert failures == []
    assert sorted((r.sensor, r.value, r.unit) for r in readings) == [
        ("outside.humidity", 40.0, "hPa"), ("outside.pressure", 1013.25, "hPa")]


def test_plugin_refusing_options_is_a_config_error(tmp_path, monkeypatch):
    install_plugin(tmp_path / "site", monkeypatch,
                   "def factory(config):\n    raise ValueError('address must be 118 or 119')\n")
    with pytest.raises(ConfigError, match="bad options for type 'bme280': address must be 118 or 119"):
        build_sensors([SensorConfig("bme280", "outside", {"address": 1})])


def test_plugin_that_cannot_load(tmp_path, monkeypatch):
    install_plugin(tmp_path / "site", monkeypatch, "import not_installed_anywhere\n")
    with pytest.raises(ConfigError, match="cannot be loaded: ModuleNotFoundError"):
        build_sensors([SensorConfig("bme280", "outside")])


def test_plugin_declaring_options_gets_them_checked_with_defaults(tmp_path, monkeypatch):
    install_plugin(tmp_path / "site", monkeypatch, (
        "from agent.telemetry.sensors import Option\n"
        "class Bme:\n"
        "    unit = 'hPa'\n"
        "    OPTIONS = (Option.choice('address', '118 or 119', (118, 119), default=118),)\n"
        "    def __init__(self, config):\n"
        "        self.name = config.name\n"
        "        self.options = config.options\n"
        "    def read(self):\n"
        "        return 1013.25\n"
        "factory = Bme\n"
    ))
    (sensor,) = build_sensors([SensorConfig("bme280", "outside")])
    assert sensor.options == {"address": 118}
    with pytest.raises(ConfigError, match="bad options for type 'bme280': address must be 118 or 119, got 1$"):
        build_sensors([SensorConfig("bme280", "outside", {"address": 1})])


@pytest.mark.parametrize("config, message", [
    (SensorConfig("load_average", "load", {"period": 2}),
     "sensor load: bad options for type 'load_average': period must be 1, 5 or 15 (minutes), got 2"),
    (SensorConfig("load_average", "load", {"perod": 5}),
     "sensor load: bad options for type 'load_average': perod is not a known option (did you mean period?)"),
    (SensorConfig("command", "soil"),
     "sensor soil: bad options for type 'command': command is missing: it must be a non-empty list"),
    (SensorConfig("memory", "mem", {"report": "free_mb"}),
     "sensor mem: bad options for type 'memory': report must be \"available_percent\" or \"available_mb\""),
])
def test_options_made_in_code_are_checked_by_the_same_schema(config, message):
    with pytest.raises(ConfigError) as info:
        build_sensors([config])
    assert str(info.value).startswith(message)


def test_every_builtin_declares_defaults_its_constructor_shares():
    # One place per default: a built-in's constructor defaults are its schema's.
    import inspect

    from agent.config.table import REQUIRED
    from agent.telemetry.sensors import BUILTIN_TYPES

    for kind, cls in BUILTIN_TYPES.items():
        parameters = inspect.signature(cls.__init__).parameters
        for option in cls.OPTIONS:
            if option.default is REQUIRED:
                continue
            assert parameters[option.name].default == option.default, (kind, option.name)
