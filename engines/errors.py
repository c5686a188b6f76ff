"""What a model backend raises: one line naming the culprit, for the user to fix.

The base is :class:`~edgesight_client.errors.EdgesightError` (a module with no
dependencies), so the command reports these as it reports the pipeline's own
errors; ``engines`` itself depends on nothing in ``pipeline``.
"""

from __future__ import annotations

from edgesight_client.errors import EdgesightError


class ModelError(EdgesightError):
    """A model file is missing, corrupt, of the wrong task or cannot be downloaded."""


class BackendUnavailable(EdgesightError):
    """An inference backend cannot run on this machine (not installed, no GPU, …)."""
