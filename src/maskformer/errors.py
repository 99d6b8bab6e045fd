"""Errors a user can cause. The CLI prints them as one line and exits non-zero; internals may assert."""


class UserError(Exception):
    """Base class: bad input from a user (file, key, value). The message names the file or key."""


class ConfigError(UserError, ValueError):
    """Unknown config key, wrong type, missing or malformed config file."""


class DataError(UserError, ValueError):
    """Missing, corrupt or inconsistent dataset file (image, label map, annotation JSON)."""


class CheckpointError(UserError, ValueError):
    """Unreadable checkpoint, unsafe pickle, or keys/shapes that do not match the model."""
