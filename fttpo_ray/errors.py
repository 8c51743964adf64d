"""User-facing errors.

Every error that a user can fix (bad config value, unknown dataset, unreadable file ...) is raised
as a :class:`FttpoError` subclass whose message names the problem and the fix in one line. The
command line prints such messages without a traceback and exits with status 2.
"""

from __future__ import annotations


class FttpoError(Exception):
    """Base class of the errors a user can act on (message = problem + fix, one line)."""


class ConfigError(FttpoError, ValueError):
    """A configuration value (YAML key, CLI option, config field) is invalid."""


class DatasetError(FttpoError):
    """A dataset is missing, corrupted, already exists or does not match its environment."""


class EnvironmentSpecError(FttpoError):
    """An environment id is unknown or its spaces do not fit what was asked."""


class StorageFullError(FttpoError):
    """The disk of the storage directory (``--storage``) is full, or too full to start."""


class NonFiniteError(FttpoError, FloatingPointError):
    """A NaN or inf appeared in a batch or a loss; training stops before it spreads."""


def first_line(err: BaseException) -> str:
    """The first line of a foreign exception's message (its type name if the message is empty),
    for quoting it inside a one-line :class:`FttpoError` message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
