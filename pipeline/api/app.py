"""One FastAPI app for the metrics port: ``/metrics``, ``/healthz`` and ``/readyz`` always, ``/api/v1`` (with
``/docs`` and ``/openapi.json``) when ``metrics.api`` is on. Errors are one JSON line, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import SecretStr
from starlette.exceptions import HTTPException

from pipeline.api.queries import ApiError
from pipeline.config import ApiConfig, MetricsConfig
from pipeline.health import health, readiness
from pipeline.secrecy import redact, redact_json

if TYPE_CHECKING:
    from pipeline.metrics import NullMetrics, PrometheusMetrics
    from pipeline.view import PipelineControl

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
NO_STORE = {"Cache-Control": "no-store"}
VERDICT: dict[str, Any] = {"content": {"application/json": {}}}


def build_app(pipeline: PipelineControl, metrics: PrometheusMetrics | NullMetrics, config: MetricsConfig) -> FastAPI:
    """The app serving ``pipeline``; routes only read it when asked."""
    api = config.api if config.api is not None and config.api.enabled else None
    app = FastAPI(
        title="edgesight",
        summary="Streams, events, snapshots, clips and counts of a running pipeline; metrics and health.",
        version="1",
        docs_url="/docs" if api else None,
        redoc_url=None,
        openapi_url="/openapi.json" if api else None,
    )
    _handle_errors(app)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
    def get_metrics() -> Response:
        return Response(metrics.exposition(), media_type=PROMETHEUS_TEXT, headers=NO_STORE)

    @app.get(
        "/healthz",
        tags=["health"],
        summary="200 while no stage failed or got stuck, else 503",
        responses={200: VERDICT, 503: VERDICT},
        response_class=JSONResponse,
    )
    def get_health() -> JSONResponse:
        verdict = health(pipeline, config.stale_after_s)
        return JSONResponse(redact_json(verdict), 200 if verdict["healthy"] else 503, headers=NO_STORE)

    @app.get(
        "/readyz",
        tags=["health"],
        summary="200 once the engine is loaded and enough streams are online, else 503",
        responses={200: VERDICT, 503: VERDICT},
        response_class=JSONResponse,
    )
    def get_ready() -> JSONResponse:
        verdict = readiness(pipeline, config.ready_share)
        return JSONResponse(redact_json(verdict), 200 if verdict["ready"] else 503, headers=NO_STORE)

    if api is not None:
        from pipeline.api.routes import api_router

        app.include_router(api_router(pipeline, api.token))
    return app


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": redact(message)}, status, headers=headers)


def _handle_errors(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.message, {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail).lower(), exc.headers)

    async def bad_request(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            where = ".".join(str(p) for p in (loc[1:] if loc[:1] in (["query"], ["path"], ["header"]) else loc))
            parts.append(f"{where}: {' '.join(str(err.get('msg', '')).split())}")
        return _error(422, "; ".join(parts) or "bad request")

    async def failed(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error answering {request.scope.get('path')}: {type(exc).__name__} (logged)")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(Exception, failed)


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, as a pipeline with a token serves it (no pipeline needed)."""
    config = MetricsConfig(port=0, api=ApiConfig(token=SecretStr("0" * 32)))
    app = build_app(cast("PipelineControl", None), cast("NullMetrics", None), config)
    return app.openapi()
