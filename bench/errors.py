"""Errors the CLI reports as a message, without a traceback."""


class BenchError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


class RunLocked(BenchError):
    """Another process is working in the run folder."""
