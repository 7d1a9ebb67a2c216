"""One exception tree for the whole program; the CLI maps each class to an exit code.

Library code raises these and never prints or exits. A message names the bad value, what
was expected and the next step, so that the CLI can print it as a single line.
"""

from __future__ import annotations


class VidrestoreError(Exception):
    """Base of every error the program reports without a traceback."""

    exit_code = 1


class ConfigError(VidrestoreError, ValueError):
    """A bad option, preset or config key."""

    exit_code = 2


class InputError(VidrestoreError):
    """The input file is missing, unreadable or not a video/image we can restore."""

    exit_code = 2


class OutputError(VidrestoreError):
    """The destination cannot be written (exists, equals the input, bad extension)."""

    exit_code = 2


class ModelError(VidrestoreError):
    """A model cannot be found, fetched, verified or loaded."""

    exit_code = 3


class UnknownModelError(ModelError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DownloadError(ModelError):
    pass


class ChecksumError(ModelError):
    pass


class DeviceError(VidrestoreError):
    """The requested device does not exist or cannot run the models."""

    exit_code = 4


class DisplayError(VidrestoreError):
    """There is no screen to open the live preview window on."""

    exit_code = 4


class EncodeError(VidrestoreError):
    """Writing the output failed."""

    exit_code = 5


class ProcessingError(VidrestoreError):
    """Frames fail systematically (the same error batch after batch, or more failed frames
    than the run accepts): a bug or a broken model, not a bad frame."""

    exit_code = 6


class Cancelled(VidrestoreError):
    """The run was interrupted (Ctrl-C); the CLI exits 130 like a shell does."""

    exit_code = 130
