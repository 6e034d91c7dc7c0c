"""``entra-agent``: run the agent, check its config, show its status, demo, screens.

::

    entra-agent run [--config PATH]          # what systemd starts
    entra-agent check-config [--config PATH] # validate without starting
    entra-agent status [--output text|json]  # the running agent's last state
    entra-agent demo [--approve-after N]     # the whole loop against local servers
    entra-agent screens --out DIR            # every screen at every size, as PNG
    entra-agent token-env [--format systemd] # IDENTITY_ENDPOINT/IDENTITY_HEADER for programs
    entra-agent config set KEY=VALUE ...     # change agent.toml, checked first

Expected failures print ``entra-agent: error: <cause> (<what to do>)`` and
exit non-zero (codes in README, "Exit codes"); ``DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from agent import __version__, paths
from agent.argparsing import Parser, add_verbose, verbosity
from agent.errors import EXIT_FAILURE, EXIT_USAGE, AgentError, run_command

__all__ = ["main", "PROG"]

PROG = "entra-agent"

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Run ``entra-agent``; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(verbosity(args), args.command)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return run_command(PROG, lambda: args.handler(args), interrupted=f"{PROG}: stopped")


def _setup_logging(verbose: int, command: str | None) -> None:
    # The service logs its story at INFO (journald keeps it); one-shot
    # commands stay quiet unless asked.
    base = logging.INFO if command == "run" else logging.WARNING
    level = max(logging.DEBUG, base - 10 * verbose)
    if os.environ.get("DEBUG"):
        level = logging.DEBUG
    from agent.logsetup import setup_logging
    setup_logging(PROG, level, names=True)
    # urllib3 at DEBUG prints URLs; ours never carry secrets, but keep it calm.
    logging.getLogger("urllib3").setLevel(max(level, logging.INFO))


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="The entra-device-agent service: sign-in on the device, telemetry, MQTT status.",
        epilog=f"Config: {paths.config_file()} (ENTRA_AGENT_CONFIG overrides). "
               "Exit codes: 0 ok, 1 failure, 2 bad input, 3 config, 4 sign-in, 5 network, "
               "6 files, 130 stopped.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbose_help = "more log output on stderr (never shows tokens)"
    add_verbose(parser, help=verbose_help, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (what systemd starts)")
    run.add_argument("--config", type=Path, help=f"config file (default: {paths.config_file()})")
    run.set_defaults(handler=_run)

    check = sub.add_parser("check-config", help="validate the config and profile without starting")
    check.add_argument("--config", type=Path, help=f"config file (default: {paths.config_file()})")
    check.set_defaults(handler=_check_config)

    status = sub.add_parser("status", help="print the running agent's last state")
    status.add_argument("--output", choices=("text", "json"), default="text")
    status.set_defaults(handler=_status)

    demo = sub.add_parser("demo", help="see the whole loop against a local identity provider "
                                       "and receiver (touches nothing of yours)")
    demo.add_argument("--approve-after", type=float, metavar="N",
                      help="approve the sign-in by itself after N seconds")
    demo.add_argument("--mqtt-host", metavar="HOST",
                      help="publish state to this MQTT broker (default: localhost:1883 if one answers)")
    demo.add_argument("--mqtt-port", type=int, default=1883, metavar="PORT")
    demo.add_argument("--duration", type=float, metavar="S",
                      help="stop by itself after S seconds (default: until Ctrl+C)")
    demo.add_argument("--token-lifetime", type=int, default=75, metavar="S",
                      help="access token lifetime in seconds, to see refreshes (default 75)")
    demo.add_argument("--interval", type=float, default=2.0, metavar="S",
                      help="seconds between sensor readings (default 2)")
    demo.set_defaults(handler=_demo)

    env = sub.add_parser("token-env", help="print IDENTITY_ENDPOINT and IDENTITY_HEADER for programs "
                                           "that use the token service",
                         description="Print the two variables that point Azure SDKs at the agent's "
                                     "token service ([token_service] in agent.toml). Creates the "
                                     "secret on first use (as root). Use: eval \"$(entra-agent "
                                     "token-env)\", or --format systemd > FILE for another unit's "
                                     "EnvironmentFile=.")
    env.add_argument("--config", type=Path, help=f"config file (default: {paths.config_file()})")
    env.add_argument("--format", choices=("shell", "systemd"), default="shell",
                     help="shell: export lines; systemd: NAME=value lines (default: %(default)s)")
    env.set_defaults(handler=_token_env)

    screens = sub.add_parser("screens", help="draw every screen at every size as PNG files")
    screens.add_argument("--out", type=Path, required=True, metavar="DIR")
    screens.set_defaults(handler=_screens)

    # `config set` (agent/configedit.py).
    from agent.configedit import add_config_parser
    config_set = add_config_parser(sub, config_help=f"config file (default: {paths.config_file()})")
    add_verbose(config_set, help=verbose_help)

    for command in sub.choices.values():
        add_verbose(command, help=verbose_help)
    return parser


def _config_path(args: argparse.Namespace) -> Path:
    return args.config if args.config is not None else paths.config_file()


def _run(args: argparse.Namespace) -> int:
    import signal
    import threading

    # systemd may send SIGTERM while the agent is still starting: remember
    # it, and stop cleanly as soon as the service can.
    early_stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: early_stop.set())
    try:
        from agent.assembly import build_service
        from agent.config import load_config

        config = load_config(_config_path(args))
        service = build_service(config)
        return service.run(stop_requested=early_stop)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_config(args: argparse.Namespace) -> int:
    from agent.config import load_config
    from agent.profiles import ProfileStore
    from agent.telemetry.sensors import build_sensors

    path = _config_path(args)
    config = load_config(path)
    profile = ProfileStore(paths.profiles_file()).get(config.profile)
    build_sensors(config.sensors)           # plugins load, options are accepted
    if config.mqtt is not None:
        config.mqtt.password()              # the password file exists and is private
    _check_display_driver(path, config.display.driver)
    mqtt = (f"{config.mqtt.host}:{config.mqtt.port}{' (TLS)' if config.mqtt.tls else ''}"
            if config.mqtt else "off")
    endpoint = config.telemetry.endpoint or "none (readings are kept, not sent)"
    print(f"{path}: OK")
    print(f"  device {config.device_id}, profile {profile.name}, {len(config.sensors)} sensors, "
          f"every {config.telemetry.interval:g} s")
    print(f"  endpoint {endpoint}; MQTT {mqtt}; display {config.display.driver}")
    from agent.assembly import pin_backend_line

    # The pin library the button and LED get (lgpio from Debian or a wheel, ...).
    print(f"  gpio {pin_backend_line()}")
    if config.token_service.enabled:
        from agent.tokensecret import read_secret, secret_path
        read_secret(secret_path())          # exists and is private (it is never printed)
        print(f"  token service on http://{config.token_service.address}:"
              f"{config.token_service.port}/msi/token")
    return 0


def _check_display_driver(path: Path, driver: str) -> None:
    """Refuse a ``display.driver`` luma does not know (``ssd1307``).

    ``run`` only warns and falls back to the console (a screen must never stop
    the agent), so without this check a typo passes check-config and shows up
    as a dark screen. Skipped when luma is not installed: ``run`` says so.
    """
    from agent.assembly import luma_display_drivers
    from agent.config.drivers import driver_problem

    known = driver_problem(driver, luma_display_drivers())
    if known is not None:
        from agent.errors import ConfigError

        raise ConfigError(f"{path}: display.driver must be console, none, framebuffer or a luma "
                          f'device, got "{driver}"', "one of: " + ", ".join(known))


def _status(args: argparse.Namespace) -> int:
    from agent.statefile import format_status, pid_alive, read_status

    path = paths.status_file()
    status = read_status(path)
    running = pid_alive(status.get("pid"))
    if args.output == "json":
        print(json.dumps({**status, "running": running}, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    if not running:
        print(f"{PROG}: error: the agent is not running (last state: {status.get('state', '?')}, "
              f"from {path}) (start it: systemctl start entra-agent)", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _token_env(args: argparse.Namespace) -> int:
    from agent.config import load_config
    from agent.tokensecret import ensure_secret, env_lines, secret_path
    from agent.tokenservice import ENDPOINT_PATH

    path = _config_path(args)
    config = load_config(path)
    service = config.token_service
    if not service.enabled:
        print(f"{PROG}: warning: the token service is off in {path} (set enabled = true under "
              "[token_service], then: sudo systemctl restart entra-agent)", file=sys.stderr)
    secret = ensure_secret(secret_path())
    sys.stdout.write(env_lines(f"http://{service.address}:{service.port}{ENDPOINT_PATH}", secret,
                               args.format))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import Demo

    demo = Demo(approve_after=args.approve_after, mqtt_host=args.mqtt_host,
                mqtt_port=args.mqtt_port, duration=args.duration,
                token_lifetime=args.token_lifetime, interval=args.interval)
    return demo.run()


def _screens(args: argparse.Namespace) -> int:
    # Pillow, luma and segno are imported as the drawing needs them, so a
    # missing one shows up inside write_gallery as well as here.
    from agent.assembly import write_screen_gallery

    try:
        written = write_screen_gallery(args.out)
    except ImportError as exc:
        missing = {"PIL": "Pillow"}.get(exc.name or "", exc.name or "Pillow")
        raise AgentError(f"drawing screens needs Pillow, luma and segno ({missing} is not installed)",
                         "pip install 'entra-device-agent[display]'") from None
    print(f"{len(written)} screens written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
