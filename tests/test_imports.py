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


def _pipeline_import_graph() -> dict[str, set[str]]:
    """Which ``pipeline`` modules each one imports, counting every import: at module level, for type checking
    only, and deferred into functions."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules = {}
    for path in (root / "pipeline").rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_pipeline_modules_import_each_other_without_a_circle() -> None:
    """Observers see the running pipeline through pipeline.view's protocols, not the runner that starts them."""
    graph = _pipeline_import_graph()
    circles = []

    def walk(module: str, path: list[str], done: set[str]) -> None:
        for dependency in sorted(graph[module]):
            if dependency in path:
                circles.append(" -> ".join([*path[path.index(dependency) :], dependency]))
            elif dependency not in done:
                walk(dependency, [*path, dependency], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            walk(module, [module], done)
    assert circles == []
