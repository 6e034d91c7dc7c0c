"""The agent's configuration file (``agent.toml``): load, validate, hold.

Everything is checked before the agent touches anything: an unknown key, a
wrong type, a missing value or an out-of-range number becomes one
:class:`~agent.errors.ConfigError` that names the file, the key path and
what is expected::

    /etc/entra-agent/agent.toml: telemetry.interval must be a number of
    seconds >= 1, got "fast"

Secrets never live in this file: a ``password``-like key is refused with a
pointer to ``password_file``. Relative ``*_file`` paths are taken relative to
the config file's folder. ``deploy/agent.toml.example`` documents every key.

The package: ``values`` (the dataclasses and every default), ``table`` (the
generic checks of one table, :class:`Option` for sensor options),
``sections`` (each table but the sensors), ``sensors`` (``[[sensors]]``:
common keys here, options from each sensor type's own schema), ``loader``
(the file and the top level), ``drivers`` (which display drivers exist).

>>> config = load_config(Path("/etc/entra-agent/agent.toml"))  # doctest: +SKIP
>>> config.telemetry.interval
60.0
"""

from __future__ import annotations

from agent.config.loader import load_config
from agent.config.sections import check_endpoint
from agent.config.table import EXAMPLE_HINT, SECRET_KEYS, Option
from agent.config.values import (
    BLANK_AFTER,
    DIM_AFTER,
    DURABILITY_MODES,
    MIB,
    AgentConfig,
    ButtonConfig,
    DisplayConfig,
    KeyConfig,
    LedConfig,
    MqttConfig,
    SensorConfig,
    TelemetryConfig,
    TokenServiceConfig,
)

__all__ = [
    "AgentConfig",
    "TelemetryConfig",
    "SensorConfig",
    "KeyConfig",
    "MqttConfig",
    "DisplayConfig",
    "ButtonConfig",
    "LedConfig",
    "TokenServiceConfig",
    "Option",
    "DURABILITY_MODES",
    "DIM_AFTER",
    "BLANK_AFTER",
    "MIB",
    "EXAMPLE_HINT",
    "SECRET_KEYS",
    "load_config",
    "check_endpoint",
]
