"""Password-protected RTSP cameras, against a real RTSP server with Basic and Digest authentication on loopback:
frames with the right password; one clear line and exit code 2 with a wrong one, the password nowhere; a camera
restarted with its stream not ready for a while is retried, never ended."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import free_port
from test_supervision import RtspServer, _server_works

from pipeline.config import ReconnectConfig, UrlSourceConfig
from pipeline.errors import PermanentSourceError, SourceError
from pipeline.sources import make_source
from pipeline.sources.base import RawFrame, Source
from pipeline.sources.rtsp import auth_params, authorize, digest_response, parse_answer
from pipeline.supervision import StateChange, SupervisedSource

USER = "admin"
PASSWORD = "p@ss:w/rd ö%"
"""Every character here needs percent-encoding in a URL's userinfo."""
WRONG = "Wr0ng-Secret"
METHODS = ["basic", "digest"]
RECONNECT = ReconnectConfig(base_s=0.2, cap_s=0.5, jitter=0.1)


def camera_url(server: RtspServer, password: str = PASSWORD) -> str:
    return f"rtsp://{USER}:{quote(password, safe='')}@127.0.0.1:{server.port}/live"


def leaks(text: str, password: str = PASSWORD) -> bool:
    """``text`` holds the password, raw or percent-encoded."""
    return password in text or quote(password, safe="") in text


@pytest.fixture
def camera() -> Iterator[Callable[..., RtspServer]]:
    """Start a password-protected server: ``camera(*options)`` (``tests/tools/rtsp_server.py``'s options)."""
    reason = _server_works()
    if reason:
        pytest.skip(reason)
    servers: list[RtspServer] = []

    def start(*options: str) -> RtspServer:
        server = RtspServer(free_port(), "--user", USER, "--password", PASSWORD, *options)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.kill()


class Recorded:
    """A real source whose open errors are kept, for the test to see what each attempt was answered."""

    live = True

    def __init__(self, source: Source, errors: list[SourceError]) -> None:
        self.source, self.errors = source, errors
        self.description = source.description

    def open(self) -> None:
        try:
            self.source.open()
        except SourceError as exc:
            self.errors.append(exc)
            raise

    def read(self) -> RawFrame | None:
        return self.source.read()

    def release(self) -> None:
        self.source.release()

    def interrupt(self) -> None:
        self.source.interrupt()


class Reader:
    """Reads a supervised source in a thread, as a capture thread does, until it ends or raises."""

    def __init__(self, source: SupervisedSource) -> None:
        self.source = source
        self.frames = 0
        self.error: BaseException | None = None
        self.ended = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while self.source.read() is not None:
                self.frames += 1
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = True

    def __enter__(self) -> Reader:
        self.source.open()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.interrupt()
        self._thread.join(10)
        self.source.release()
        assert not self._thread.is_alive()


def supervised(url: str, errors: list[SourceError], **source: Any) -> tuple[SupervisedSource, list[StateChange]]:
    config = UrlSourceConfig(url=url, open_timeout_s=5, read_timeout_s=3, **source)
    changes: list[StateChange] = []
    return SupervisedSource("cam", lambda: Recorded(make_source(config), errors), RECONNECT, changes.append), changes


def wait_until(what: str, pred: Callable[[], bool], reader: Reader, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert not reader.ended, f"the stream ended while waiting for {what}: {reader.error}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.05)


def answered(errors: list[SourceError], since: int, code: str) -> Callable[[], bool]:
    """An attempt after the first ``since`` was answered ``code``."""
    return lambda: any(code in str(e) for e in errors[since:])


def more_frames(reader: Reader, count: int) -> Callable[[], bool]:
    """``count`` more frames have been read than now."""
    target = reader.frames + count
    return lambda: reader.frames >= target


# -- the Digest computation against the RFCs' examples --------------------------------------------------------------
def test_digest_response_matches_the_rfc_examples() -> None:
    # RFC 2617 section 3.5
    assert (
        digest_response(
            "Mufasa",
            "Circle Of Life",
            "testrealm@host.com",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "GET",
            "/dir/index.html",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )
    # RFC 7616 section 3.9.1, MD5
    assert (
        digest_response(
            "Mufasa",
            "Circle of Life",
            "http-auth@example.org",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "GET",
            "/dir/index.html",
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == "8ca523f5e9506fed4657c9700eebdbec"
    )


def test_the_probe_answers_the_strongest_challenge_it_can() -> None:
    uri = "rtsp://127.0.0.1:8554/live"
    head = (
        "RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n"
        'WWW-Authenticate: Digest realm="cam", nonce="n1", algorithm=SHA-256, qop="auth"\r\n'
        'WWW-Authenticate: Digest realm="cam \\"A\\"", nonce="n2", opaque="o2", algorithm=MD5, qop="auth,auth-int"\r\n'
        'WWW-Authenticate: Basic realm="cam"'
    )
    answer = parse_answer(head)
    assert answer is not None and (answer.status, answer.reason, len(answer.challenges)) == (401, "Unauthorized", 3)
    header = authorize(answer.challenges, "admin", PASSWORD, "DESCRIBE", uri)
    assert header is not None and header.startswith("Digest ")
    fields = dict(auth_params(header.removeprefix("Digest ")))
    expected = digest_response(
        "admin", PASSWORD, 'cam "A"', "n2", "DESCRIBE", uri, qop="auth", nc=fields["nc"], cnonce=fields["cnonce"]
    )
    assert fields["realm"] == 'cam "A"' and fields["opaque"] == "o2" and fields["uri"] == uri
    assert (fields["qop"], fields["algorithm"], fields["response"]) == ("auth", "MD5", expected)
    basic = authorize(('Basic realm="cam"',), "admin", PASSWORD, "DESCRIBE", uri)
    assert basic == "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    assert authorize(('Digest realm="cam", nonce="n", algorithm=SHA-256',), "a", "b", "DESCRIBE", uri) is None


# -- a real server ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_the_right_password_gives_frames(camera: Callable[..., RtspServer], method: str) -> None:
    server = camera("--auth", method)
    shapes = {"pyav": ((360, 320), " (PyAV)"), "cpu": ((240, 320, 3), "")}  # PyAV: the decoder's I420 planes
    for decoder, (shape, kind) in shapes.items():
        source = make_source(UrlSourceConfig(url=camera_url(server), open_timeout_s=10, decoder=decoder))
        try:
            source.open()
            frames = [source.read() for _ in range(5)]
        finally:
            source.release()
        assert all(f is not None and f.image.shape == shape for f in frames), decoder
        name = f"stream 'rtsp://***@127.0.0.1:{server.port}/live'{kind}"
        assert source.description == name, "no user name or password in it"


@pytest.mark.parametrize("method", METHODS)
def test_a_wrong_password_is_permanent_and_never_shown(camera: Callable[..., RtspServer], method: str) -> None:
    server = camera("--auth", method)
    for decode_process in (False, True):
        source = make_source(UrlSourceConfig(url=camera_url(server, WRONG), decode_process=decode_process))
        with pytest.raises(PermanentSourceError) as raised:
            source.open()
        source.release()
        message = str(raised.value)
        assert "401 Unauthorized (wrong user name or password)" in message, message
        assert f"127.0.0.1:{server.port}/live" in message and not leaks(message, WRONG) and USER not in message


def test_a_wrong_password_at_start_up_is_one_line_and_exit_code_2(
    camera: Callable[..., RtspServer], arch_weights: Path
) -> None:
    server = camera("--auth", "digest")
    url = camera_url(server, WRONG)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--source", url, "--model", str(arch_weights)]
    cmd += ["--publish", f"tcp://127.0.0.1:{free_port()}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert (
        [line for line in lines if line.startswith("edgesight: error: ")]
        == lines[-1:]
        == [
            f"edgesight: error: stream 'cam0': cannot open stream 'rtsp://***@127.0.0.1:{server.port}/live' (PyAV): "
            "the server answered 401 Unauthorized (wrong user name or password)"
        ]
    ), done.stderr
    assert "Traceback" not in done.stderr
    assert not leaks(done.stdout + done.stderr, WRONG)


def test_a_stream_not_ready_at_start_up_is_waited_for(camera: Callable[..., RtspServer], tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    server = camera("--auth", "basic", "--ready-file", str(ready))
    errors: list[SourceError] = []
    source, _ = supervised(camera_url(server), errors)
    with Reader(source) as reader:
        wait_until("503 while the stream is not ready", answered(errors, 0, "503"), reader)
        assert reader.frames == 0
        ready.touch()
        wait_until("frames", lambda: reader.frames >= 3, reader)
    assert not any(isinstance(e, PermanentSourceError) for e in errors), errors
    assert not any(leaks(str(e)) for e in errors)


def test_a_camera_restarted_ten_times_with_its_stream_late_is_never_ended(
    camera: Callable[..., RtspServer], tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    ready.touch()
    server = camera("--ready-file", str(ready))
    options = list(server.options)
    errors: list[SourceError] = []
    source, changes = supervised(camera_url(server), errors)
    recoveries = []
    with Reader(source) as reader:
        wait_until("first frames", lambda: reader.frames >= 3, reader)
        for cycle in range(10):
            # a rebooting camera: its RTSP port answers (credentials checked) before its stream is there
            method, not_ready = METHODS[cycle % 2], ("503", "404")[cycle // 2 % 2]
            ready.unlink()
            server.kill()
            wait_until("the outage noticed", lambda: source.state in ("reconnecting", "offline"), reader)
            server.options = [*options, "--auth", method, "--not-ready", not_ready]
            seen = len(errors)
            server.start()
            wait_until(f"{not_ready} answer", answered(errors, seen, not_ready), reader)
            back = time.monotonic()
            ready.touch()
            wait_until("frames again", more_frames(reader, 3), reader, timeout=30)
            recoveries.append(round(time.monotonic() - back, 2))
        assert reader.error is None and not reader.ended
    print(f"cycles: frames again {recoveries} s after the stream was ready")
    assert sum(c.state == "online" for c in changes) == 11
    assert any(isinstance(e, PermanentSourceError) for e in errors), "404s were answered, and retried"
    assert not any(leaks(str(e)) or leaks(c.reason or "") for e in errors for c in changes)
