"""Errors a user can cause and fix: each carries one line that names the culprit."""

from __future__ import annotations


class EdgesightError(Exception):
    """Base class for errors reported to the user as one line, without a traceback."""


class ConfigError(EdgesightError):
    """A config file is missing, unreadable or invalid."""


class SourceError(EdgesightError):
    """A video source cannot be opened or read."""


class PermanentSourceError(SourceError):
    """A source that retrying cannot fix: the server answered, but has no such stream or refuses us."""


class ModelError(EdgesightError):
    """A model file is missing, corrupt, of the wrong task or cannot be downloaded."""


class PublishError(EdgesightError):
    """The ZeroMQ endpoint cannot be bound or connected."""


class BackendUnavailable(EdgesightError):
    """An inference backend cannot run on this machine (not installed, no GPU, …)."""


class StartupInterrupted(EdgesightError):
    """A stop was requested (Ctrl-C, SIGTERM) before the pipeline had started."""
