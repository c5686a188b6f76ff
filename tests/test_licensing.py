"""What a lawyer reads: the license files, the package metadata built from pyproject, and the claims NOTICE makes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import free_port

REPO = Path(__file__).parent.parent


def test_the_built_metadata_carries_the_license_and_the_notice(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        shutil.copy(REPO / name, tree / name)
    for package in ("pipeline", "engines"):
        shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "out").mkdir()
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import build_meta as b; print(b.prepare_metadata_for_build_wheel('out'))",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    info = tree / "out" / build.stdout.strip().splitlines()[-1]
    fields = [line for line in (info / "METADATA").read_text().splitlines() if line.startswith("License")]
    assert fields == ["License-Expression: Apache-2.0", "License-File: LICENSE", "License-File: NOTICE"]
    assert (info / "licenses" / "NOTICE").read_text() == (REPO / "NOTICE").read_text()


def test_license_is_apache_2_and_notice_says_what_ultralytics_means() -> None:
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in license_text
    notice = " ".join((REPO / "NOTICE").read_text().split())
    for claim in ("Apache License, Version 2.0", "Ultralytics", "AGPL-3.0", "over a network", "Enterprise license"):
        assert claim in notice
    head = "\n".join((REPO / "README.md").read_text().splitlines()[:30])
    assert "[NOTICE](NOTICE)" in head and "[LICENSE](LICENSE)" in head


SUBSCRIBER_ONLY = """
import json, sys, time, zmq
from pipeline.schema import StatusMessage
from pipeline.subscriber import Subscriber

pub = zmq.Context.instance().socket(zmq.PUB)
pub.bind(sys.argv[1])
body = json.dumps({"schema": "edgesight.status/1", "stream_id": "cam", "event": "eos", "at": 1.0}).encode()
with Subscriber(sys.argv[1], ["status."]) as sub:
    deadline = time.monotonic() + 20
    msg = None
    while msg is None and time.monotonic() < deadline:
        pub.send_multipart([b"status.cam", body])  # until the subscription has reached the publisher
        msg = sub.recv(0.2)
pub.close(0)
assert isinstance(msg, StatusMessage) and msg.event == "eos", msg
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "ultralytics")
assert not loaded, loaded
"""


def test_the_subscriber_side_runs_no_ultralytics() -> None:
    """NOTICE says so: a program that receives edgesight's messages loads nothing of Ultralytics."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-c", SUBSCRIBER_ONLY, endpoint], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
