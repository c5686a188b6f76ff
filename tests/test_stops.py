"""SIGTERM in the states the online test does not cover: loading the model, blocked on a slow subscriber."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import zmq
from test_cli import EDGESIGHT, REPO


def _run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EDGESIGHT, "run", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _stop_within(proc: subprocess.Popen[str], seconds: float) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    return elapsed


def test_sigterm_while_the_model_loads(endpoint: str) -> None:
    proc = _run("--source", "synthetic://?frames=50", "--model", "edgesight-det", "--publish", endpoint)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while "opened synthetic scene" not in proc.stderr.readline():  # the stream is open: the model loads next
        assert proc.poll() is None and time.monotonic() < deadline, "the pipeline never opened its stream"
    _stop_within(proc, 5.0)


def test_sigterm_while_blocked_on_a_subscriber_that_does_not_read(
    arch_weights: Path, endpoint: str, tmp_path: Path
) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(
        "streams:\n  - {id: gen, source: 'synthetic://?frames=3000&width=320&height=180'}\n"
        f"model: {{path: {arch_weights}, imgsz: 320}}\n"
        f"publish: {{endpoint: '{endpoint}', wait_for_subscriber: true, send_hwm: 2}}\n"
    )
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.RCVBUF, 4096)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    try:
        proc = _run(str(config))
        assert sub.poll(60_000), "the pipeline never published"
        time.sleep(3.0)  # lossless, a 2-message send queue and nobody reading: the publisher is stuck sending
        assert proc.poll() is None
        _stop_within(proc, 2.0)
    finally:
        sub.close(linger=0)
        ctx.term()
