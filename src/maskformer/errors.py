"""Errors a user can cause. The CLI prints them as one line and exits non-zero; internals may assert."""


class UserError(Exception):
    """Base class: bad input from a user (file, key, value). The message names the file or key."""


class ConfigError(UserError, ValueError):
    """Unknown config key, wrong type, missing or malformed config file."""


class DataError(UserError, ValueError):
    """Missing, corrupt or inconsistent dataset file (image, label map, annotation JSON)."""


class CheckpointError(UserError, ValueError):
    """Unreadable checkpoint, unsafe pickle, or keys/shapes that do not match the model."""


def one_line(error: BaseException) -> str:
    """The user-facing line of ``error``. A DataLoader worker re-raises a worker's error with the worker's whole
    traceback as its message ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); the line
    that matters is the original message, the traceback's last line without its ``module.Class:`` prefix."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        head, sep, rest = last.partition(": ")
        return rest if sep and "." in head and " " not in head else last
    return text.splitlines()[0] if text else type(error).__name__
