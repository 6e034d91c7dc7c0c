"""Putting the service together from the config: the parts, the display, the token client.

The one place ``hardware`` (Pillow, luma, gpiozero) is imported, lazily, so
the core runs on a box without the extras. Heavy modules load here, when the
service starts, never at import time.

>>> service = build_service(load_config(paths.config_file()))
>>> service.run()
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from agent import paths, ui
from agent.clock import Clock
from agent.errors import AgentError

if TYPE_CHECKING:  # pragma: no cover
    from agent.config import AgentConfig
    from agent.service import Service

__all__ = ["Parts", "build_parts", "open_face", "build_service"]

log = logging.getLogger(__name__)


class Parts(Protocol):
    """What :func:`build_parts` fills in (the service): None where not injected.

    ``publisher=False`` means no MQTT even when the config has some.
    """

    sensors: list[Any] | None
    outbox: Any
    uploader: Any
    publisher: Any
    button: Any
    led: Any


def build_parts(
    parts: Parts,
    config: "AgentConfig",
    *,
    clock: Clock,
    session: Any,
    rng: random.Random,
    pin_factory: Any,
    token: Callable[[], str | None],
    refresh_token: Callable[[], str | None],
    on_mqtt_change: Callable[[bool], None],
    post: Callable[[str], None],
) -> None:
    """Build on *parts* what was not injected, from *config*. Heavy imports happen here, lazily.

    Each part is set on *parts* as soon as it is built, so a later failure
    leaves the earlier ones there to be closed. *token* and *refresh_token*
    are the uploader's bearer token callables; *post* queues a button event
    ("press", "hold_start", ...) or a Home Assistant button press
    ("ha_command", "new_code"/"sign_out") for the service.
    """
    cfg = config
    if parts.sensors is None:
        from agent.telemetry.sensors import build_sensors
        parts.sensors = build_sensors(cfg.sensors)
    if parts.outbox is None:
        from agent.telemetry.outbox import Outbox
        parts.outbox = Outbox(paths.outbox_file(), durability=cfg.telemetry.durability,
                              max_readings=cfg.telemetry.outbox_max_readings,
                              max_bytes=cfg.telemetry.outbox_max_bytes)
    if parts.uploader is None and cfg.telemetry.endpoint:
        from agent.telemetry.uploader import Uploader, upload_policy
        parts.uploader = Uploader(cfg.telemetry.endpoint, device_id=cfg.device_id,
                                  token=token,
                                  refresh_token=refresh_token,
                                  clock=clock, session=session,
                                  timeout=cfg.telemetry.timeout, rng=rng,
                                  backoff=upload_policy(cfg.telemetry.interval))
    if parts.publisher is None and cfg.mqtt is not None:
        from agent.homeassistant import sensor_infos
        from agent.status import StatusPublisher, reconnect_policy
        parts.publisher = StatusPublisher(cfg.mqtt, device_id=cfg.device_id,
                                          sensors=sensor_infos(cfg.sensors, parts.sensors),
                                          on_connection_change=on_mqtt_change,
                                          on_command=lambda command: post("ha_command", command),
                                          announced_path=paths.homeassistant_file(),
                                          first_connect_jitter=cfg.mqtt.connect_spread,
                                          reconnect=reconnect_policy(cfg.mqtt.reconnect_spread))
    if parts.publisher is False:
        parts.publisher = None
    # A button or LED that cannot be used is reported, never fatal: the
    # device must keep reporting even with a loose wire.
    if cfg.button is not None and parts.button is None:
        try:
            from hardware.button import ButtonControl
            parts.button = ButtonControl(
                cfg.button.pin, hold_seconds=cfg.button.hold_seconds,
                on_press=lambda: post("press"),
                on_hold_start=lambda: post("hold_start"),
                on_hold_cancel=lambda: post("hold_cancel"),
                on_hold=lambda: post("hold"),
                pin_factory=pin_factory)
        except (AgentError, ImportError) as exc:
            log.error("button on pin %s not available: %s", cfg.button.pin, exc)
    if cfg.led is not None and parts.led is None:
        try:
            from hardware.button import StatusLed
            parts.led = StatusLed(cfg.led.pin, pin_factory=pin_factory)
        except (AgentError, ImportError) as exc:
            log.error("LED on pin %s not available: %s", cfg.led.pin, exc)


def open_face(settings: dict[str, Any], *, clock: Clock | None = None,
              stream: Any = None) -> ui.Presenter:
    """The presenter for ``[display]`` settings: the one place ``hardware.display`` is imported.

    ``driver = "none"`` shows nothing. Anything else goes through
    :func:`hardware.display.open_presenter` (which falls back to the console
    on device trouble); a box without Pillow/luma gets the plain console face.
    """
    driver = str(settings.get("driver", "console"))
    if driver == "none":
        return ui.NullPresenter()
    try:
        from hardware.display import open_presenter
    except ImportError as exc:
        if driver != "console":
            log.warning("display driver %s needs the display extra (%s); using the console",
                        driver, exc)
        return ui.ConsolePresenter(stream)
    return open_presenter(settings, clock=clock, stream=stream)


def build_service(config: "AgentConfig", *, clock: Clock | None = None, stream: Any = None,
                  presenter: ui.Presenter | None = None) -> "Service":
    """A :class:`~agent.service.Service` for *config* with real parts: profile, token store,
    display."""
    from agent.auth.tokens import TokenClient
    from agent.clock import SystemClock
    from agent.profiles import ProfileStore
    from agent.service import Service
    from agent.tokenstore import TokenStore

    clock = clock or SystemClock()
    profile = ProfileStore(paths.profiles_file()).get(config.profile)
    client = TokenClient(profile, store=TokenStore(paths.token_dir()), clock=clock)
    if presenter is None:
        presenter = open_face(config.display.as_settings(), clock=clock, stream=stream)
    return Service(config, clock=clock, token_client=client, presenter=presenter)
