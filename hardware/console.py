"""The console face with a picture: the OLED screen drawn in Unicode half-blocks.

In a terminal, ``entra-agent demo`` shows what a 128x64 OLED would show:
two pixel rows per text row with ``▀ ▄ █`` (a half-block cell is square on
most terminal fonts, so the QR code stays scannable from the screen), then
the same text lines as :class:`agent.ui.ConsolePresenter`, which can be
copied.

The picture is drawn only where it fits: a terminal at least as wide as the
screen plus its frame (130 columns for 128 pixels) that can show the
half-block characters. Elsewhere (an 80-column terminal, ``TERM=dumb``, a
Latin-1 locale) it is left out and the text lines alone say everything: the
code and the address are always text.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, TextIO

from agent import termui
from agent.ui import ConsolePresenter, SignInView, StatusView, View
from hardware import screens

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["HalfBlockPresenter", "half_blocks"]

# (upper pixel lit, lower pixel lit) -> character
_CELLS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def half_blocks(image: "Image.Image") -> list[str]:
    """A 1-bit picture as text, two pixel rows per line (lit pixel = ink)."""
    image = image.convert("1")
    width, height = image.size
    pixels = image.load()
    if pixels is None:  # Pillow returns None only for an image with no pixel data
        return []
    lines = []
    for y in range(0, height, 2):
        row = []
        for x in range(width):
            top = bool(pixels[x, y])
            bottom = bool(pixels[x, y + 1]) if y + 1 < height else False
            row.append(_CELLS[(top, bottom)])
        lines.append("".join(row).rstrip())
    return lines


class HalfBlockPresenter:
    """Prints the OLED picture of each new view, then its text lines.

    Like the console presenter it prints only when what the view says
    changes (a countdown ticking is not a change), so a scrolling terminal
    does not fill with pictures.
    """

    def __init__(self, stream: TextIO | None = None, *, size: tuple[int, int] = (128, 64),
                 interactive: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._size = size
        # interactive: as ConsolePresenter (says "Press Ctrl+C" only when one can).
        self._text = ConsolePresenter(self._stream, interactive=interactive)
        self._lock = threading.Lock()
        self._last_key: object = None

    def show(self, view: View) -> None:
        key: object = view
        if isinstance(view, SignInView):
            key = (type(view), view.user_code)
        elif isinstance(view, StatusView):
            key = (type(view), view.account, view.outbox_depth == 0, view.mqtt_connected)
        with self._lock:
            if key != self._last_key and self._fits():
                self._last_key = key
                picture = half_blocks(screens.render(view, self._size, "1"))
                border = "+" + "-" * self._size[0] + "+"
                self._stream.write(border + "\n")
                for line in picture:
                    self._stream.write("|" + line.ljust(self._size[0]) + "|\n")
                self._stream.write(border + "\n")
                self._stream.flush()
        self._text.show(view)

    def _fits(self) -> bool:
        """Whether the picture fits the terminal as it is now (it may be resized)."""
        term = termui.terminal(self._stream)
        return term.unicode and term.width is not None and term.width >= self._size[0] + 2

    def wake(self) -> None:
        pass

    def close(self) -> None:
        self._text.close()
