"""``${NAME}`` in a config file's values: secrets (camera passwords, keys) come from the environment, not the YAML.

A Kubernetes Secret or a systemd ``EnvironmentFile`` sets ``CAM_PASSWORD``; the
config says ``source: rtsp://admin:${CAM_PASSWORD}@10.0.0.5/live``. Forms:
``${NAME}`` (an unset variable is an error naming it and where it is used),
``${NAME:-default}`` (the default when unset or empty) and ``$${`` for a literal
``${``. Only values are expanded, never keys, and only in config files: a
stream added over the control endpoint is taken as sent, so that a remote peer
cannot read the box's environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.errors import ConfigError

_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\{(?P<bad>[^}]*)\}?")


def expand_env(data: Any, environ: Mapping[str, str], origin: str, where: str = "") -> Any:
    """A copy of parsed YAML ``data`` with ``${NAME}`` references in its string values replaced from ``environ``."""
    if isinstance(data, str):
        return _expand(data, environ, origin, where)
    if isinstance(data, dict):
        return {k: expand_env(v, environ, origin, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, environ, origin, f"{where}[{i}]") for i, v in enumerate(data)]
    return data


def _expand(text: str, environ: Mapping[str, str], origin: str, where: str) -> str:
    if "$" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$${":
            return "${"
        if match["bad"] is not None:
            raise ConfigError(f"{origin}: {where or 'top level'}: '{match[0]}' is not a variable reference (${{NAME}})")
        name, default = match["name"], match["default"]
        value = environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is None:
            raise ConfigError(f"{origin}: {where}: environment variable {name} is not set (used as ${{{name}}})")
        return value

    return _REFERENCE.sub(substitute, text)
