"""agent.config: loading, defaults and the one-line errors for bad files."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest

from agent.config import (
    AgentConfig,
    ButtonConfig,
    DisplayConfig,
    LedConfig,
    MqttConfig,
    SensorConfig,
    TelemetryConfig,
    TokenServiceConfig,
    check_endpoint,
    load_config,
)
from agent.errors import ConfigError
from tests.fixtures_config import error_of, write

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "agent.toml.example"


# ---------------------------------------------------------------- the example

def test_example_loads_and_documents_every_key(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "agent.toml")
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    (tmp_path / "mqtt-password").chmod(0o600)
    config = load_config(tmp_path / "agent.toml")
    assert config.profile == "default"
    assert config.device_id == "greenhouse-1"
    assert config.telemetry.endpoint == "https://api.example.com/telemetry"
    assert config.telemetry.durability == "spill"
    assert [s.type for s in config.sensors] == [
        "cpu_temperature", "load_average", "memory", "disk_usage", "uptime", "ds18b20", "command"]
    assert config.mqtt is not None and config.mqtt.port == 8883 and config.mqtt.tls
    assert config.mqtt.password_file == tmp_path / "mqtt-password"
    assert config.mqtt.password() == "s3cret"
    assert config.display.driver == "ssd1306"
    assert config.button == ButtonConfig(pin=17, hold_seconds=5.0)
    assert config.led == LedConfig(pin=27)

    text = EXAMPLE.read_text()
    keys = set(re.findall(r"^#?\s*([a-z_0-9]+)\s*=", text, flags=re.M))
    for cls in (AgentConfig, TelemetryConfig, MqttConfig, DisplayConfig, ButtonConfig, LedConfig,
                TokenServiceConfig):
        for f in dataclasses.fields(cls):
            if f.name in ("path", "telemetry", "sensors", "mqtt", "display", "button", "led",
                          "extra", "token_service"):
                continue
            assert f.name in keys, f"{cls.__name__}.{f.name} is not documented in the example"
    for table in ("[telemetry]", "[[sensors]]", "[mqtt]", "[display]", "[display.extra]",
                  "[button]", "[led]", "[token_service]"):
        assert table in text
    # every sensor option of the built-ins is shown
    from agent.telemetry.sensors import BUILTIN_TYPES
    for sensor in BUILTIN_TYPES.values():
        for option in sensor.OPTIONS:
            assert option.name in keys, option.name


def test_minimal_file_gets_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.profile == "default"
    assert config.device_id == socket.gethostname().split(".")[0]
    assert config.telemetry == TelemetryConfig()
    assert config.telemetry.interval == 60 and config.telemetry.batch_max == 500
    assert config.telemetry.outbox_max_bytes == 50 * 1024 * 1024
    assert config.sensors == []
    assert config.mqtt is None and config.button is None and config.led is None
    assert config.display == DisplayConfig()


def test_sensor_defaults_and_options(tmp_path):
    config = load_config(write(tmp_path, """
[[sensors]]
type = "cpu_temperature"

[[sensors]]
type = "command"
name = "soil"
command = ["/bin/echo", "41"]
unit = "%"

[[sensors]]
type = "ds18b20"
device = "28-0316a2795eff"
"""))
    cpu, soil, ds = config.sensors
    assert cpu == SensorConfig("cpu_temperature", "cpu_temperature", {}, None)
    assert soil.options == {"command": ["/bin/echo", "41"], "timeout": 5.0}
    assert soil.unit == "%"
    assert ds.options == {"device": "28-0316a2795eff"}


def test_mqtt_port_follows_tls(tmp_path):
    plain = load_config(write(tmp_path, '[mqtt]\nhost = "b"\n'))
    assert plain.mqtt == MqttConfig(host="b", port=1883)
    secure = load_config(write(tmp_path, '[mqtt]\nhost = "b"\ntls = true\n'))
    assert secure.mqtt.port == 8883


def test_display_settings_mapping(tmp_path):
    config = load_config(write(tmp_path, """
[display]
driver = "sh1106"
i2c_address = 61
rotate = 2
[display.extra]
h_offset = 2
"""))
    settings = config.display.as_settings()
    assert settings["driver"] == "sh1106"
    assert settings["i2c_address"] == "0x3D"
    assert settings["rotate"] == 2
    assert settings["h_offset"] == 2
    assert settings["width"] == 128 and settings["height"] == 64


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("text, expected", [
    ('[telemetry]\ninterval = "fast"\n',
     'telemetry.interval must be a number of seconds >= 1, got "fast"'),
    ("[telemetry]\ninterval = 0.5\n", "telemetry.interval must be a number of seconds >= 1, got 0.5"),
    ("[telemetry]\nbatch_max = 0\n", "telemetry.batch_max must be a whole number from 1 to 10000, got 0"),
    ("[telemetry]\nbatch_max = 2.5\n", "telemetry.batch_max must be a whole number"),
    ('[telemetry]\ndurability = "yolo"\n',
     'telemetry.durability must be either "spill" or "strict", got "yolo"'),
    ("[telemetry]\njitter = 1\n", "telemetry.jitter must be true or false, got 1"),
    ('[telemetry]\nendpoint = "http://api.example.com/t"\n',
     "telemetry.endpoint must be an https:// URL (plain http is allowed only on loopback)"),
    ('[telemetry]\nendpoint = "ftp://x/y"\n', "telemetry.endpoint must be an https:// URL"),
    ('[telemetry]\nintervall = 5\n', "telemetry.intervall is not a known key (did you mean telemetry.interval?"),
    ('colour = "red"\n', "colour is not a known key"),
    ("telemetry = 5\n", "telemetry must be a table, got 5"),
    ('device_id = "a/b"\n', 'device_id must be a name of letters, digits'),
    ('profile = "../../etc"\n', "profile must be a profile name"),
    ('[[sensors]]\nname = "x"\n', "sensors[0].type is missing"),
    ('[[sensors]]\ntype = "thermometer"\n', 'sensors[0].type must be one of '),
    ('[[sensors]]\ntype = "uptimee"\n',
     'uptime, got "uptimee" (did you mean "uptime"? see deploy/agent.toml.example)'),
    ('[[sensors]]\ntype = "command"\n', "sensors[0].command is missing: it must be a non-empty list"),
    ('[[sensors]]\ntype = "command"\ncommand = "ls"\n',
     'sensors[0].command must be a non-empty list of texts (the program and its arguments), got "ls"'),
    ('[[sensors]]\ntype = "command"\ncommand = []\n', "sensors[0].command must be a non-empty list"),
    ('[[sensors]]\ntype = "command"\ncommand = ["a"]\ntimeout = 0\n',
     "sensors[0].timeout must be a number of seconds > 0"),
    ('[[sensors]]\ntype = "uptime"\n[[sensors]]\ntype = "uptime"\n',
     'sensors[1].name must be unique, got "uptime" (also sensors[0])'),
    ('[[sensors]]\ntype = "uptime"\ncommand = ["x"]\n', "sensors[0].command is not a known key"),
    ('[[sensors]]\ntype = "ds18b20"\ndevice = "10-abc"\n', "sensors[0].device must be a 1-wire device id"),
    ('[[sensors]]\ntype = "load_average"\nperiod = 2\n', "sensors[0].period must be 1, 5 or 15"),
    ("[mqtt]\nport = 1883\n", "mqtt.host is missing"),
    ('[mqtt]\nhost = "b"\nport = 70000\n', "mqtt.port must be a port number from 1 to 65535, got 70000"),
    ('[mqtt]\nhost = "b"\nconnect_spread = -1\n', "mqtt.connect_spread must be a number of seconds from 0 to 3600"),
    ('[mqtt]\nhost = "b"\nreconnect_spread = 0\n', "mqtt.reconnect_spread must be a number of seconds from 1 to 3600"),
    ('[mqtt]\nhost = "b"\ntopic_prefix = "a/#"\n', "mqtt.topic_prefix must be a topic prefix"),
    ('[mqtt]\nhost = "b"\nusername = "u"\npassword = "hunter2"\n',
     "mqtt.password: secrets do not belong in the config file (put it in a file readable only by root and set mqtt.password_file)"),
    ('[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "nope"\n', "mqtt.password_file names "),
    ('[display]\ndriver = "SSD 1306"\n', "display.driver must be a display driver"),
    ('[display]\ni2c_address = "0x99"\n', 'display.i2c_address must be an I2C address such as "0x3C", got "0x99"'),
    ('[display]\nrotate = 180\n', "display.rotate must be 0, 1, 2 or 3"),
    ('[display]\nrotate = 1.0\n', "display.rotate must be 0, 1, 2 or 3 (quarter turns; 2 = upside down), got 1.0"),
    ('[display]\ndim_after = 600\nblank_after = 60\n', "display.blank_after must be 0 or >= display.dim_after"),
    ('[display]\nextra = {width = 1}\n', "display.extra.width repeats a [display] key"),
    ("[button]\npin = 99\n", "button.pin must be a BCM pin number from 0 to 53"),
    ("[button]\npin = 17\nhold_seconds = 0\n", "button.hold_seconds must be a number of seconds"),
    ("[button]\npin = 17\n[led]\npin = 17\n", "led.pin must differ from button.pin"),
    ("[led]\n", "led.pin is missing"),
])
def test_bad_values_name_key_and_expectation(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert expected in message, message


def test_toml_syntax_error_names_line(tmp_path):
    message = error_of(tmp_path, 'profile = "default"\n\n[telemetry\ninterval = 5\n')
    assert "not valid TOML" in message
    assert "line 3" in message


def test_missing_file_suggests_example(tmp_path):
    path = tmp_path / "nowhere" / "agent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "deploy/agent.toml.example" in message and "raspberry-pi-auth.sh" in message


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def install_plugin(root: Path, monkeypatch, body: str) -> None:
    """A real (tiny) installed distribution with an entra_agent.sensors entry point."""
    (root / "bme_plugin.py").write_text(body)
    info = root / "bme_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bme-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[entra_agent.sensors]\nbme280 = bme_plugin:factory\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "bme_plugin", raising=False)


def test_plugin_sensor_keeps_its_options(tmp_path, monkeypatch):
    plugin = tmp_path / "site"
    plugin.mkdir()
    install_plugin(plugin, monkeypatch, "def factory(config):\n    raise ValueError('unused')\n")
    config = load_config(write(tmp_path, '[[sensors]]\ntype = "bme280"\naddress = 118\n'))
    assert config.sensors[0].options == {"address": 118}
    message = error_of(tmp_path, '[[sensors]]\ntype = "bme281"\n')
    assert "bme280" in message and "cpu_temperature" in message


PLUGIN_WITH_OPTIONS = (
    "from agent.telemetry.sensors import Option\n"
    "def factory(config):\n"
    "    raise ValueError('unused')\n"
    "factory.OPTIONS = (\n"
    "    Option.choice('address', '118 or 119 (the I2C address)', (118, 119), default=118),\n"
    "    Option.number('oversampling', 'a number from 1 to 16', 1, 16, default=1),\n"
    ")\n"
)


def test_plugin_declaring_options_is_checked_like_a_builtin(tmp_path, monkeypatch):
    plugin = tmp_path / "site"
    plugin.mkdir()
    install_plugin(plugin, monkeypatch, PLUGIN_WITH_OPTIONS)
    config = load_config(write(tmp_path, '[[sensors]]\ntype = "bme280"\n'))
    assert config.sensors[0].options == {"address": 118, "oversampling": 1.0}
    config = load_config(write(tmp_path, '[[sensors]]\ntype = "bme280"\naddress = 119\n'))
    assert config.sensors[0].options == {"address": 119, "oversampling": 1.0}

    path = tmp_path / "agent.toml"
    message = error_of(tmp_path, '[[sensors]]\ntype = "bme280"\naddress = 120\n')
    assert message == f"{path}: sensors[0].address must be 118 or 119 (the I2C address), got 120"
    message = error_of(tmp_path, '[[sensors]]\ntype = "bme280"\nadress = 119\n')
    assert message.startswith(f"{path}: sensors[0].adress is not a known key")
    assert "did you mean sensors[0].address?" in message
    message = error_of(tmp_path, '[[sensors]]\ntype = "bme280"\noversampling = "max"\n')
    assert message == f'{path}: sensors[0].oversampling must be a number from 1 to 16, got "max"'


def test_plugin_declaring_options_that_are_not_options(tmp_path, monkeypatch):
    plugin = tmp_path / "site"
    plugin.mkdir()
    install_plugin(plugin, monkeypatch, "def factory(config):\n    pass\nfactory.OPTIONS = ['address']\n")
    message = error_of(tmp_path, '[[sensors]]\ntype = "bme280"\naddress = 118\n')
    assert message.startswith(f'{tmp_path / "agent.toml"}: sensors[0].type "bme280" cannot be used: '
                              "the plugin for type 'bme280' declares OPTIONS that are not a sequence "
                              "of agent.config.Option")


# ---------------------------------------------------------------- secrets

def test_password_file_is_read_and_checked(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("pa ss\r\n")
    secret.chmod(0o640)
    config = load_config(write(tmp_path, f'[mqtt]\nhost = "b"\ntls = true\nusername = "u"\npassword_file = "{secret}"\n'))
    assert config.mqtt.password() == "pa ss"

    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by every user.*chmod 600"):
        config.mqtt.password()

    secret.chmod(0o600)
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        config.mqtt.password()

    secret.unlink()
    with pytest.raises(ConfigError) as info:
        config.mqtt.password()
    assert str(secret) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    config = load_config(write(tmp_path, f'[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "{secret}"\n'))
    secret.chmod(0o000)
    with pytest.raises(ConfigError, match="permission denied"):
        config.mqtt.password()


def test_relative_files_are_beside_the_config(tmp_path):
    (tmp_path / "ca.pem").write_text("---")
    config = load_config(write(tmp_path, '[mqtt]\nhost = "b"\ntls = true\nca_file = "ca.pem"\n'))
    assert config.mqtt.ca_file == tmp_path / "ca.pem"


def test_ca_file_needs_tls(tmp_path):
    (tmp_path / "ca.pem").write_text("---")
    message = error_of(tmp_path, '[mqtt]\nhost = "b"\nca_file = "ca.pem"\n')
    assert "mqtt.tls must be true" in message


# ---------------------------------------------------------------- endpoint rule

@pytest.mark.parametrize("url, ok", [
    ("https://api.example.com/telemetry", True),
    ("http://127.0.0.1:8080/t", True),
    ("http://127.5.6.7/t", True),
    ("http://[::1]:9000/t", True),
    ("http://localhost:9000/t", True),
    ("http://api.example.com/t", False),
    ("http://10.0.0.1/t", False),
    ("https://user:pw@api.example.com/t", False),
    ("https:///t", False),
    ("api.example.com/t", False),
])
def test_endpoint_rule(url, ok):
    assert (check_endpoint(url) is None) is ok


def test_is_loopback_host():
    from agent.net import is_loopback
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("192.168.1.2") and not is_loopback("") and not is_loopback(None)


def test_a_password_never_crosses_the_network_in_clear(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    table = f'[mqtt]\nhost = "broker.lan"\nusername = "u"\npassword_file = "{secret}"\n'
    with pytest.raises(ConfigError, match=r"mqtt.tls must be true .*broker.lan.*in clear"):
        load_config(write(tmp_path, table))
    assert load_config(write(tmp_path, table + "tls = true\n")).mqtt.port == 8883
    local = table.replace("broker.lan", "127.0.0.1")
    assert load_config(write(tmp_path, local)).mqtt.tls is False      # loopback: nothing crosses
