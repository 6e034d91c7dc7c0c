"""agent.config: the Home Assistant keys (per-key units and classes, prefix, buttons)."""

from __future__ import annotations

import pytest

from agent.config import KeyConfig, load_config
from tests.fixtures_config import error_of, write

ENV = '''
[[sensors]]
type = "command"
name = "env"
command = ["/bin/true"]
unit = "°C"
device_class = "temperature"
'''


def test_per_key_units_classes_and_labels(tmp_path):
    config = load_config(write(tmp_path, ENV + '''
[sensors.keys.humidity]
unit = "%"
device_class = "humidity"
[sensors.keys.pressure]
unit = "hPa"
device_class = "atmospheric_pressure"
label = "Air pressure"
[sensors.keys."it's"]
state_class = "measurement"
'''))
    env = config.sensors[0]
    assert (env.unit, env.device_class) == ("°C", "temperature")
    assert env.keys == {"humidity": KeyConfig(unit="%", device_class="humidity"),
                        "pressure": KeyConfig(unit="hPa", device_class="atmospheric_pressure",
                                              label="Air pressure"),
                        "it's": KeyConfig(state_class="measurement")}
    assert env.key_units() == {"humidity": "%", "pressure": "hPa"}


def test_todays_keys_keep_working(tmp_path):
    config = load_config(write(tmp_path, '[[sensors]]\ntype = "command"\nname = "soil"\n'
                                         'command = ["/bin/true"]\nunit = "%"\n'))
    assert config.sensors[0].unit == "%" and config.sensors[0].keys == {}
    assert config.sensors[0].device_class is None


@pytest.mark.parametrize("extra, expected", [
    ('[sensors.keys.humidity]\ndevice_class = "humidty"\n',
     'sensors[0].keys.humidity.device_class must be a Home Assistant sensor device class such as '
     '"temperature", "humidity" or "pressure", got "humidty" (did you mean "humidity"?'),
    ('[sensors.keys.pressure]\nunit = "hpa"\ndevice_class = "atmospheric_pressure"\n',
     'sensors[0].keys.pressure.unit must be "Pa" or "bar" or "cbar" or "hPa" or "inHg" or "kPa" '
     'or "mbar" or "mmHg" or "psi" for Home Assistant\'s device class "atmospheric_pressure", '
     'got "hpa" (did you mean "hPa"?)'),
    # A key without its own class takes the sensor's: "%" is no temperature.
    ('[sensors.keys.humidity]\nunit = "%"\n',
     'sensors[0].keys.humidity.unit must be "K" or "°C" or "°F" for Home Assistant\'s device '
     'class "temperature", got "%"'),
    ('[sensors.keys.humidity]\nunit = "%"\ndevice_class = "humidity"\nstate_class = "total"\n',
     'sensors[0].keys.humidity.state_class must be "measurement" with device_class "humidity", '
     'got "total"'),
    ('[sensors.keys.humidity]\nstate_class = "measurment"\ndevice_class = "humidity"\nunit = "%"\n',
     'sensors[0].keys.humidity.state_class must be "measurement" or "total" or "total_increasing", '
     'got "measurment" (did you mean "measurement"?'),
    ('[sensors.keys.humidity]\nunits = "%"\n',
     'sensors[0].keys.humidity.units is not a known key (did you mean sensors[0].keys.humidity.unit?'),
    ('[sensors.keys."a\\u0007b"]\nunit = "%"\n', 'sensors[0].keys has a key "a\\x07b"'),
    ('[sensors.keys.seen]\ndevice_class = "timestamp"\nstate_class = "measurement"\n',
     'sensors[0].keys.seen.state_class must be left out with device_class "timestamp"'),
    ('label = "x\\ny"\n', "sensors[0].label must be a text of at most 64 characters"),
])
def test_wrong_ha_keys_name_file_key_and_fix(tmp_path, extra, expected):
    if extra.startswith("["):
        text = ENV + extra
    else:
        text = ENV.replace('device_class = "temperature"\n', 'device_class = "temperature"\n' + extra)
    message = error_of(tmp_path, text)
    assert expected in message, message


def test_a_built_in_sensor_s_own_unit_is_not_second_guessed(tmp_path):
    # cpu_temperature's default unit is known only to the sensor: no check here.
    config = load_config(write(tmp_path, '[[sensors]]\ntype = "cpu_temperature"\n'
                                         'device_class = "temperature"\n'))
    assert config.sensors[0].device_class == "temperature"


def test_mqtt_home_assistant_keys(tmp_path):
    config = load_config(write(tmp_path, '[mqtt]\nhost = "127.0.0.1"\n'))
    assert config.mqtt.homeassistant_prefix == "homeassistant"
    assert not config.mqtt.homeassistant_new_code_button
    assert not config.mqtt.homeassistant_sign_out_button
    config = load_config(write(tmp_path, '[mqtt]\nhost = "127.0.0.1"\nhomeassistant_prefix = "ha/main"\n'
                                         'homeassistant_new_code_button = true\n'
                                         'homeassistant_sign_out_button = true\n'))
    assert config.mqtt.homeassistant_prefix == "ha/main"
    assert config.mqtt.homeassistant_new_code_button and config.mqtt.homeassistant_sign_out_button
    for bad in ("/ha", "ha/", "ha/#", "h a", ""):
        message = error_of(tmp_path, f'[mqtt]\nhost = "127.0.0.1"\nhomeassistant_prefix = "{bad}"\n')
        assert "mqtt.homeassistant_prefix must be a topic prefix" in message
