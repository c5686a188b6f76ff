"""The HTTP API beside metrics and health: one FastAPI app (:mod:`~pipeline.api.app`) served by uvicorn in a
daemon thread (:mod:`~pipeline.api.server`) on ``metrics.port``. :mod:`~pipeline.api.queries` answers without
any web framework, for the preview's page too."""
