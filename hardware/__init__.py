"""The device's own face: screens, displays, the button and the status LED.

Modules (import what you need; this package imports nothing heavy itself, so
a board without a screen never loads Pillow, luma or gpiozero):

- ``hardware.screens``: pure drawing of :mod:`agent.ui` views (``render``,
  ``render_text``, ``GEOMETRIES``, ``write_gallery``);
- ``hardware.display``: ``open_presenter(settings)`` from the ``[display]`` table;
- ``hardware.presenter``: luma presenters with burn-in care;
- ``hardware.console``: the console face with a half-block picture;
- ``hardware.button``: ``ButtonControl`` (press, hold with confirmation);
- ``hardware.led``: ``StatusLed``;
- ``hardware.errors``: ``HardwareError``.
"""

__all__: list[str] = []
