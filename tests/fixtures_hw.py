"""Fixtures for the device's face: gpiozero's mock pins, a recording luma interface."""

from __future__ import annotations

import pytest


class RecordingSerial:
    """A luma serial interface that keeps what the device driver sends.

    The real luma device code runs (``contrast``, ``hide``, ``show``, an
    HD44780's init sequence); only the wire is replaced, the way luma's own
    ``noop`` interface does, so tests can see the commands.
    """

    _bitmode = 4            # what luma's parallel devices (HD44780) ask of a bus

    def __init__(self) -> None:
        self.commands: list[tuple[int, ...]] = []
        self.data_bytes = 0
        self.closed = False

    def command(self, *cmd: int) -> None:
        self.commands.append(tuple(cmd))

    def data(self, data) -> None:
        self.data_bytes += len(data)

    def cleanup(self) -> None:
        self.closed = True

    def backlight(self, on: bool) -> None:
        """Stands in for an LCD's backlight switch (luma's ``backlight=`` argument)."""
        self.backlight_on = bool(on)


@pytest.fixture
def recording_serial() -> RecordingSerial:
    return RecordingSerial()


@pytest.fixture
def mock_factory():
    """gpiozero's MockFactory, closed after the test (pins released)."""
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    yield factory
    factory.close()
