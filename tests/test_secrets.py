"""Camera passwords stay secret: URL userinfo is hidden everywhere edgesight writes, and configs take ``${NAME}``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import zmq
from conftest import free_port

from pipeline.config import load_config
from pipeline.envexpand import expand_env
from pipeline.errors import ConfigError
from pipeline.secrecy import redact

EDGESIGHT = [sys.executable, "-m", "pipeline.cli"]
PASSWORD = "pw-Zq8xT3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:secret@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
        ("cannot open stream 'rtsps://a:b@host/x': 401", "cannot open stream 'rtsps://***@host/x': 401"),
        ("rtsp://admin:p@ss@host/a@b", "rtsp://***@host/a@b"),  # a raw '@' in the password, one in the path
        ("rtsp://user@host/x and http://u:p@h:80/", "rtsp://***@host/x and http://***@h:80/"),
        ("rtsp://10.0.0.5/live", "rtsp://10.0.0.5/live"),
        ("http://host/path?mail=a@b.c", "http://host/path?mail=a@b.c"),
        ("mail me at a@b.c", "mail me at a@b.c"),
    ],
)
def test_redact_hides_the_userinfo_of_every_url(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_env_references_expand_in_values_and_an_unset_one_is_named() -> None:
    env = {"CAM_PW": "s3cret", "EMPTY": ""}
    data = {
        "streams": [{"id": "gate", "source": "rtsp://admin:${CAM_PW}@10.0.0.5/live"}],
        "note": "${MISSING:-fallback} ${EMPTY:-used} $${CAM_PW}",
        "n": 3,
    }
    out = expand_env(data, env, "cfg.yaml")
    assert out["streams"][0]["source"] == "rtsp://admin:s3cret@10.0.0.5/live"
    assert out["note"] == "fallback used ${CAM_PW}"
    assert out["n"] == 3
    with pytest.raises(ConfigError, match=r"cfg\.yaml: streams\[0\]\.source: environment variable NOPE is not set"):
        expand_env({"streams": [{"source": "rtsp://a:${NOPE}@h/x"}]}, env, "cfg.yaml")
    with pytest.raises(ConfigError, match="is not a variable reference"):
        expand_env({"a": "${1bad}"}, env, "cfg.yaml")


def test_a_config_file_takes_its_password_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "cam.yaml"
    config.write_text("streams:\n  - id: gate\n    source: rtsp://admin:${CAM_PW}@192.0.2.10/live\n")
    assert load_config(config, {"CAM_PW": PASSWORD}).streams[0].source.url.endswith(f":{PASSWORD}@192.0.2.10/live")
    check = subprocess.run([*EDGESIGHT, "check", str(config)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 2
    assert check.stderr.strip().splitlines() == [
        f"edgesight: error: {config}: streams[0].source: environment variable CAM_PW is not set (used as ${{CAM_PW}})"
    ]


def _get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return str(reply.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode(errors="replace"))


def _collect(endpoint: str, out: list[bytes], stop: threading.Event) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    try:
        while not stop.is_set():
            if sub.poll(100):
                out.append(b"".join(sub.recv_multipart()))
    finally:
        sub.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_password_appears_nowhere_in_what_a_run_writes_or_publishes(
    arch_weights: Path, tmp_path: Path, log_format: str
) -> None:
    """A camera with a password that cannot be reached (so its URL is in errors, statuses and reasons), a stream
    added at run time with another, and every output of the run: logs, the error lines, the bus, the metrics and
    health endpoints, the status file, ``streams list``, the preview page and ``streams add``'s answer."""
    endpoint, control = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    metrics_port, preview_port = free_port(), free_port()
    status_file = tmp_path / "status.json"
    config = tmp_path / "cams.yaml"
    config.write_text(
        "streams:\n"
        f"  - {{id: gate, source: 'rtsp://admin:${{CAM_PW}}@127.0.0.1:{free_port()}/live',"
        " reconnect: {base_s: 0.2, cap_s: 0.5}}\n"
        "  - {id: scene, source: 'synthetic://?frames=100000&width=160&height=96'}\n"
        f"model: {{path: {arch_weights}, imgsz: 160}}\n"
        f"publish: {{endpoint: '{endpoint}'}}\n"
        f"metrics: {{port: {metrics_port}, status_file: '{status_file}'}}\n"
        f"preview: {{port: {preview_port}}}\n"
        f"control: {{endpoint: '{control}'}}\n"
    )
    published: list[bytes] = []
    done = threading.Event()
    listener = threading.Thread(target=_collect, args=(endpoint, published, done))
    listener.start()
    proc = subprocess.Popen(
        [*EDGESIGHT, "run", str(config), "--log-format", log_format],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CAM_PW": PASSWORD},
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (b"reconnecting" in b"".join(published) and status_file.exists()):
            time.sleep(0.2)
        time.sleep(1.0)
        for path in ("/metrics", "/healthz", "/readyz"):
            seen.append(_get(metrics_port, path))
        seen.append(_get(preview_port, "/"))
        seen.append(status_file.read_text())
        for verb in (
            ["list"],
            ["add", "--id", "yard", "--source", f"rtsp://viewer:{PASSWORD}@127.0.0.1:{free_port()}/yard"],
            ["list"],
        ):
            answer = subprocess.run(
                [*EDGESIGHT, "streams", *verb, "--control", control, "--timeout", "20"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            seen += [answer.stdout, answer.stderr]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        done.set()
        listener.join(5)
    seen += [out, err, *(m.decode(errors="replace") for m in published)]
    everything = "\n".join(seen)
    assert "rtsp://***@127.0.0.1" in err, err[-2000:]  # the camera's URL was there to leak, hidden
    assert b"reconnecting" in b"".join(published) and "yard" in everything
    assert PASSWORD not in everything
    if log_format == "json":
        assert all(json.loads(line) for line in err.splitlines() if line.startswith("{"))
