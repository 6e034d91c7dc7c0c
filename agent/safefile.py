"""Old home of :mod:`agent.fileio`'s readers, kept so existing imports work."""

from agent.fileio import MAX_CONFIG_BYTES, FileTooLarge, NotRegularFile, read_regular

__all__ = ["NotRegularFile", "FileTooLarge", "read_regular", "MAX_CONFIG_BYTES"]
