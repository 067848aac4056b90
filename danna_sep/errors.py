"""User-facing errors.

Everything a user can cause (a bad file, a config typo, a missing folder) raises a subclass of
:class:`DannaError`. The command line prints its message and exits with status 2, never a traceback.
"""


class DannaError(Exception):
    """Base class of errors caused by user input; the message is meant for the user."""


class AudioError(DannaError):
    """An audio file cannot be read or written (names the file and the cause)."""


class ConfigError(DannaError):
    """A config is invalid (names the key path and what is allowed)."""


class DatasetError(DannaError):
    """A dataset folder is missing, has the wrong layout, or holds an invalid track."""


class CheckpointError(DannaError):
    """A checkpoint or exported model is missing, unreadable or does not match the model."""
