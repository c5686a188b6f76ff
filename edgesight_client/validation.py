"""The published messages' JSON Schemas (shipped in ``edgesight_client/schemas/``) and validation against them.

:func:`schema_for` needs nothing more; :func:`validate` needs ``jsonschema``, an optional dependency
(``pip install "./client[validate]"``), imported only when first used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from edgesight_client.schema import MessageError, _major

JSONSCHEMA_MISSING = 'JSON Schema validation needs jsonschema: pip install jsonschema (or "./client[validate]")'


def schema_for(schema: str) -> dict[str, Any]:
    """The JSON Schema for a body's ``schema`` value, e.g. ``edgesight.detections/1`` (``/1.2`` reads as ``/1``)."""
    name, major = _major(schema)
    file = resources.files("edgesight_client") / "schemas" / f"{name.removeprefix('edgesight.')}-{major}.schema.json"
    if not name.startswith("edgesight.") or not file.is_file():
        raise MessageError(f"no JSON Schema for '{schema}'")
    loaded: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return loaded


def require_jsonschema() -> None:
    """Raise :class:`ImportError` with the install command when ``jsonschema`` is missing."""
    try:
        import jsonschema  # noqa: F401
    except ImportError as exc:
        raise ImportError(JSONSCHEMA_MISSING) from exc


def validate(body: Mapping[str, Any]) -> None:
    """Check one message body (``msg.raw``) against its JSON Schema; :class:`MessageError` names the first problem."""
    schema = body.get("schema")
    if not isinstance(schema, str):
        raise MessageError(f"missing or malformed 'schema': {schema!r}")
    name, major = _major(schema)
    check = _validator(f"{name}/{major}")  # one per schema file, however many minor versions arrive
    import jsonschema

    error = jsonschema.exceptions.best_match(check.iter_errors(body))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the body"
        raise MessageError(f"{schema}: at {where}: {error.message}")


@cache
def _validator(schema: str) -> Any:
    """The compiled ``jsonschema`` validator for one ``schema`` value."""
    require_jsonschema()
    import jsonschema

    loaded = schema_for(schema)
    return jsonschema.validators.validator_for(loaded)(loaded)
