"""Errors a user can cause and fix: each carries one line that names the culprit."""

from __future__ import annotations

# the bus client's errors (its key files), the same classes here so that one ``except`` catches both
from edgesight_client.errors import ConfigError as ConfigError
from edgesight_client.errors import EdgesightError

# the model backends' errors, raised by ``engines`` (which imports nothing from here)
from engines.errors import BackendUnavailable as BackendUnavailable
from engines.errors import ModelError as ModelError


class SourceError(EdgesightError):
    """A video source cannot be opened or read."""


class PermanentSourceError(SourceError):
    """A source that retrying cannot fix: the server answered, but has no such stream or refuses us."""


class PublishError(EdgesightError):
    """The ZeroMQ endpoint cannot be bound or connected."""


class StartupInterrupted(EdgesightError):
    """A stop was requested (Ctrl-C, SIGTERM) before the pipeline had started."""
