"""The composition root: the service's parts from the config, then the service.

The one module that imports ``hardware`` (Pillow, luma, gpiozero), lazily, so
the core runs on a box without the extras: the display, the button and LED,
the pin library check-config names, and the screen gallery all come through
here. Heavy modules load when a part is built, never at import time.

>>> service = build_service(load_config(paths.config_file()))   # build_parts, then Service(...)
>>> service.run()
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import paths, ui
from agent.clock import Clock
from agent.errors import AgentError
from agent.service.events import EventQueue, Kind
from agent.service.parts import Parts
from agent.service.tokenholder import TokenHolder

if TYPE_CHECKING:  # pragma: no cover
    from agent.auth.tokens import TokenClient
    from agent.config import AgentConfig
    from agent.notify import Notifier
    from agent.service.loop import Service

__all__ = ["build_parts", "build_service", "open_face", "open_attached_screen",
           "pin_backend_line", "write_screen_gallery", "luma_display_drivers"]

log = logging.getLogger(__name__)


def build_parts(
    config: "AgentConfig",
    *,
    clock: Clock,
    token_client: "TokenClient",
    presenter: ui.Presenter,
    rng: random.Random,
    session: Any = None,
    notifier: "Notifier | None" = None,
    status_path: Path | None = None,
    sensors: list[Any] | None = None,
    outbox: Any = None,
    uploader: Any = None,
    publisher: Any = None,
    pin_factory: Any = None,
) -> Parts:
    """The parts for *config*; a part given is used as is (tests inject theirs).

    ``publisher=False`` means no MQTT even when the config has some. A
    button or LED that cannot be used is reported, never fatal (the device
    must keep reporting with a loose wire). When a part fails to build, the
    ones built before it are closed.
    """
    cfg = config
    events = EventQueue()
    tokens = TokenHolder(token_client, on_refreshed=lambda new: events.post(Kind.TOKENS, new))
    built: list[Any] = []
    try:
        if sensors is None:
            from agent.telemetry.sensors import build_sensors
            sensors = build_sensors(cfg.sensors)
        if outbox is None:
            from agent.telemetry.outbox import Outbox
            outbox = Outbox(paths.outbox_file(), durability=cfg.telemetry.durability,
                            max_readings=cfg.telemetry.outbox_max_readings,
                            max_bytes=cfg.telemetry.outbox_max_bytes)
            built.append(outbox)
        if uploader is None and cfg.telemetry.endpoint:
            from agent.telemetry.uploader import Uploader, upload_policy
            uploader = Uploader(cfg.telemetry.endpoint, device_id=cfg.device_id,
                                token=tokens.access_token, refresh_token=tokens.refresh_after_401,
                                clock=clock, session=session, timeout=cfg.telemetry.timeout,
                                rng=rng, backoff=upload_policy(cfg.telemetry.interval))
            built.append(uploader)
        if publisher is None and cfg.mqtt is not None:
            from agent.homeassistant import sensor_infos
            from agent.status import StatusPublisher, reconnect_policy
            publisher = StatusPublisher(cfg.mqtt, device_id=cfg.device_id,
                                        sensors=sensor_infos(cfg.sensors, sensors),
                                        on_connection_change=lambda up: events.post(Kind.MQTT, up),
                                        on_command=lambda command: events.post(Kind.HA_COMMAND, command),
                                        announced_path=paths.homeassistant_file(),
                                        first_connect_jitter=cfg.mqtt.connect_spread,
                                        reconnect=reconnect_policy(cfg.mqtt.reconnect_spread))
            built.append(publisher)
        if publisher is False:
            publisher = None
    except BaseException:
        for part in reversed(built):
            try:
                part.close()
            except Exception:  # noqa: BLE001 - the first failure is the one to tell
                log.exception("closing %s failed", type(part).__name__)
        raise
    button = led = None
    if cfg.button is not None:
        try:
            from hardware.button import ButtonControl
            button = ButtonControl(
                cfg.button.pin, hold_seconds=cfg.button.hold_seconds,
                on_press=lambda: events.post(Kind.PRESS),
                on_hold_start=lambda: events.post(Kind.HOLD_START),
                on_hold_cancel=lambda: events.post(Kind.HOLD_CANCEL),
                on_hold=lambda: events.post(Kind.HOLD),
                pin_factory=pin_factory)
        except (AgentError, ImportError) as exc:
            log.error("button on pin %s not available: %s", cfg.button.pin, exc)
    if cfg.led is not None:
        try:
            from hardware.button import StatusLed
            led = StatusLed(cfg.led.pin, pin_factory=pin_factory)
        except (AgentError, ImportError) as exc:
            log.error("LED on pin %s not available: %s", cfg.led.pin, exc)
    if notifier is None:
        from agent.notify import Notifier
        notifier = Notifier.from_environment()
    return Parts(token_client=token_client, presenter=presenter, notifier=notifier,
                 events=events, tokens=tokens,
                 status_path=status_path if status_path is not None else paths.status_file(),
                 sensors=sensors, outbox=outbox, uploader=uploader, publisher=publisher,
                 button=button, led=led)


def build_service(config: "AgentConfig", *, clock: Clock | None = None, stream: Any = None,
                  presenter: ui.Presenter | None = None,
                  token_client: "TokenClient | None" = None,
                  sign_in_retry_delay: float | None = None, rng: random.Random | None = None,
                  **parts: Any) -> "Service":
    """A :class:`~agent.service.Service` for *config*: the profile's token client,
    the display, the parts (:func:`build_parts`; keyword *parts* are passed on)."""
    from agent.clock import SystemClock
    from agent.service.loop import Service

    clock = clock or SystemClock()
    if token_client is None:
        from agent.auth.tokens import TokenClient
        from agent.profiles import ProfileStore
        from agent.tokenstore import TokenStore

        profile = ProfileStore(paths.profiles_file()).get(config.profile)
        token_client = TokenClient(profile, store=TokenStore(paths.token_dir()), clock=clock)
    opened = presenter is None
    if presenter is None:
        presenter = open_face(config.display.as_settings(), clock=clock, stream=stream)
    rng = rng or random.Random()
    try:
        built = build_parts(config, clock=clock, token_client=token_client, presenter=presenter,
                            rng=rng, **parts)
    except BaseException:
        if opened:
            presenter.close()          # the screen goes dark rather than frozen on "Starting"
        raise
    if sign_in_retry_delay is None:
        return Service(config, built, clock=clock, rng=rng)
    return Service(config, built, clock=clock, rng=rng, sign_in_retry_delay=sign_in_retry_delay)


# -- the face and the board (the only imports of hardware) ---------------------------------

def open_face(settings: dict[str, Any], *, clock: Clock | None = None,
              stream: Any = None) -> ui.Presenter:
    """The presenter for ``[display]`` settings.

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


def open_attached_screen(settings: dict[str, Any]) -> ui.Presenter | None:
    """The attached screen of ``[display]`` (``entra-auth-cli`` shows its code there
    too), or None: the console already shows everything, so only a real device
    counts; a screen that cannot be opened is one warning line, never a failure."""
    import io

    if str(settings.get("driver", "console")) in ("console", "none"):
        return None
    try:
        import hardware.display  # noqa: F401 - is the extra installed?
    except ImportError:
        log.warning("no screen support installed (install the 'display' extra)")
        return None
    # A device that fails falls back to the console; send that copy nowhere.
    presenter = open_face(settings, stream=io.StringIO())
    return None if isinstance(presenter, (ui.ConsolePresenter, ui.NullPresenter)) else presenter


def pin_backend_line() -> str:
    """Which pin library gpiozero gets here, in words (check-config)."""
    from hardware.pins import pin_backend

    return pin_backend().describe()


def luma_display_drivers() -> list[str] | None:
    """Every display driver luma knows (``ssd1306``, ...); None without luma."""
    from hardware.display import luma_drivers

    return luma_drivers()


def write_screen_gallery(out: Path) -> list[Path]:
    """Draw every screen into *out* (``entra-agent screens``); ImportError without the extra."""
    from hardware.screens import write_gallery

    return list(write_gallery(out))
