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
