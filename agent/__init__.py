"""entra-device-agent: device-code sign-in and telemetry for headless boards.

The package imports without Pillow, luma or gpiozero; those live in
``hardware`` and are loaded only where a screen or a button is assembled.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
