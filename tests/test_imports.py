"""Importing the packages has no side effects and loads no heavy backend."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light_and_side_effect_free() -> None:
    code = (
        "import os, sys, cv2; before = dict(os.environ);"  # cv2 edits the environment itself
        "import pipeline.cli, pipeline.runner, pipeline.subscriber, engines.registry;"
        "assert 'torch' not in sys.modules, 'torch imported at import time';"
        "assert 'ultralytics' not in sys.modules, 'ultralytics imported at import time';"
        "assert dict(os.environ) == before, 'environment changed at import time'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_engines_import_nothing_from_the_pipeline() -> None:
    """The backends are the bottom layer: the pipeline uses them, never the other way round."""
    import ast
    from pathlib import Path

    offenders = []
    for path in sorted((Path(__file__).resolve().parents[1] / "engines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "pipeline"]
    assert offenders == []
