"""The bus client's :class:`Subscriber`, here under its older name; it lives in :mod:`edgesight_client`,
which installs on its own (``pip install ./client``) without the pipeline's dependencies."""

from __future__ import annotations

from edgesight_client.subscriber import Subscriber

__all__ = ["Subscriber"]
