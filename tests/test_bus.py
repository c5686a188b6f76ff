"""The ZeroMQ wrapper and the subscriber client, over real sockets."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from pipeline.bus import BusPublisher
from pipeline.errors import PublishError
from pipeline.schema import DETECTIONS_SCHEMA, DetectionsMessage, MessageError, StatusMessage, decode
from pipeline.subscriber import Subscriber
from pipeline.zmq_direct import mapped_libzmq


def body(seq: int, stream: str = "cam") -> dict[str, object]:
    return {
        "schema": DETECTIONS_SCHEMA,
        "stream_id": stream,
        "seq": seq,
        "frame_index": seq,
        "pts_ms": 0.0,
        "captured_at": 1.0,
        "published_at": 2.0,
        "width": 4,
        "height": 4,
        "model": "m",
        "detections": [{"class_id": 0, "label": "person", "confidence": 0.5, "box": [0, 0, 1, 1]}],
    }


SENDS = pytest.mark.parametrize("keep_lock", [True, False], ids=["lock-kept", "through-pyzmq"])
"""Both ways a message leaves: libzmq called directly (the default where it can be), and pyzmq's send."""


@SENDS
def test_wait_for_subscriber_then_nothing_is_lost(endpoint: str, keep_lock: bool) -> None:
    bus = BusPublisher(endpoint, send_hwm=10, lossless=True, keep_lock=keep_lock)
    stop = threading.Event()
    assert not bus.wait_for_subscriber(stop, timeout_s=0.3)
    with Subscriber(endpoint, ["detections."], rcv_hwm=10) as sub:
        assert bus.wait_for_subscriber(stop, timeout_s=5)
        received: list[int] = []

        def slow_reader() -> None:
            while len(received) < 300:
                msg = sub.recv(5)
                if msg is None:
                    return
                assert isinstance(msg, DetectionsMessage)
                received.append(msg.seq)
                if len(received) % 50 == 0:
                    time.sleep(0.1)

        reader = threading.Thread(target=slow_reader)
        reader.start()
        for seq in range(300):
            assert bus.send("detections.cam", body(seq), stop)
        reader.join(20)
    bus.close()
    assert received == list(range(300))
    assert sum(bus.dropped.values()) == 0


@SENDS
def test_what_is_still_queued_at_close_reaches_the_subscriber(endpoint: str, keep_lock: bool) -> None:
    """A run's last messages are sent just before the publisher closes: they still arrive (here a thousand large
    ones are queued when it closes, and the subscriber only starts reading after that)."""
    bus = BusPublisher(endpoint, lossless=True, keep_lock=keep_lock)
    stop = threading.Event()
    padding = "x" * 20_000
    with Subscriber(endpoint, ["detections."]) as sub:
        assert bus.wait_for_subscriber(stop, timeout_s=5)
        for seq in range(1000):
            assert bus.send("detections.cam", {**body(seq), "padding": padding}, stop)
        bus.close()
        received = []
        while (msg := sub.recv(2)) is not None:
            assert isinstance(msg, DetectionsMessage)
            received.append(msg.seq)
    assert received == list(range(1000))


@SENDS
def test_live_mode_drops_and_counts_instead_of_blocking(endpoint: str, keep_lock: bool) -> None:
    bus = BusPublisher(endpoint, send_hwm=5, lossless=False, keep_lock=keep_lock)
    with Subscriber(endpoint, [""], rcv_hwm=5) as _sub:
        assert bus.wait_for_subscriber(threading.Event(), timeout_s=5)
        t0 = time.monotonic()
        results = [bus.send("detections.cam", body(i)) for i in range(5000)]
        assert time.monotonic() - t0 < 5
    bus.close()
    assert results.count(False) == bus.dropped["detections.cam"] > 0


def test_subscriber_reports_gaps_from_seq(endpoint: str) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    with Subscriber(endpoint) as sub:
        time.sleep(0.3)  # let the subscription reach the publisher
        for seq in [0, 1, 4, 5, 9]:
            pub.send_multipart([b"detections.cam", json.dumps(body(seq)).encode()])
        pub.send_multipart([b"detections.cam", b"{not json"])
        pub.send_multipart(
            [
                b"status.cam",
                json.dumps({"schema": "edgesight.status/1", "stream_id": "cam", "event": "eos", "at": 3.0}).encode(),
            ]
        )
        got = [sub.recv(2) for _ in range(6)]
    pub.close(0)
    ctx.term()
    assert [m.seq for m in got if isinstance(m, DetectionsMessage)] == [0, 1, 4, 5, 9]
    assert isinstance(got[-1], StatusMessage) and got[-1].event == "eos"
    assert dict(sub.gaps) == {"cam": [(2, 3), (6, 8)]}
    assert sub.missed == 5 and sub.invalid == 1


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"[]", "not a JSON object"),
        (b'{"schema": "other/1"}', "unsupported schema"),
        (b'{"schema": "edgesight.detections/1", "stream_id": "a"}', "missing or bad field"),
        (b'{"schema": "edgesight.detections/x"}', "malformed schema version"),
        (b"\xff\xfe", "not a JSON message"),
        (
            json.dumps(
                {**body(1), "detections": [{"class_id": 0, "label": "a", "confidence": 0.5, "box": [0, 1]}]}
            ).encode(),
            "bad detection",
        ),
        (
            json.dumps(
                {**body(1), "detections": [{"class_id": 0, "label": "a", "confidence": 7, "box": [0, 0, 1, 1]}]}
            ).encode(),
            "bad detection",
        ),
    ],
)
def test_decode_rejects_what_is_not_ours(payload: bytes, error: str) -> None:
    with pytest.raises(MessageError, match=error):
        decode(b"detections.a", payload)


def test_newer_minor_fields_are_ignored() -> None:
    msg = decode(b"detections.cam", json.dumps({**body(3), "future_field": [1, 2]}).encode())
    assert isinstance(msg, DetectionsMessage) and msg.seq == 3


def test_binding_a_busy_endpoint_is_a_clear_error(endpoint: str) -> None:
    first = BusPublisher(endpoint)
    try:
        with pytest.raises(PublishError, match=f"cannot bind publisher to '{endpoint}'"):
            BusPublisher(endpoint)
    finally:
        first.close()


def test_a_slow_subscriber_sees_what_it_missed_as_gaps(endpoint: str) -> None:
    """The publisher never waits (drops are counted); the slow subscriber accounts for every seq it did not get."""
    bus = BusPublisher(endpoint, send_hwm=10, lossless=False)
    got: list[int] = []
    with Subscriber(endpoint, ["detections."], rcv_hwm=10) as sub:
        assert bus.wait_for_subscriber(threading.Event(), timeout_s=5)
        sender = threading.Thread(target=lambda: [bus.send("detections.cam", body(i)) for i in range(3000)])
        sender.start()
        while (msg := sub.recv(1.0)) is not None:
            assert isinstance(msg, DetectionsMessage)
            got.append(msg.seq)
            time.sleep(0.001)  # slower than the publisher
        sender.join(5)
        gaps, missed = dict(sub.gaps), sub.missed
    bus.close()
    covered = set(got) | {s for a, b in gaps.get("cam", []) for s in range(a, b + 1)}
    assert covered == set(range(got[-1] + 1)), "every seq up to the last one received is received or in a gap"
    assert got == sorted(got) and 0 < missed <= bus.dropped["detections.cam"]


@SENDS
def test_a_message_s_parts_arrive_whole(endpoint: str, keep_lock: bool) -> None:
    """Topic, body and a binary attachment leave as one message, in order, byte for byte."""
    bus = BusPublisher(endpoint, lossless=True, keep_lock=keep_lock)
    picture = bytes(range(256)) * 40 + b"\x00"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"events.")
    sub.connect(endpoint)
    try:
        assert bus.wait_for_subscriber(threading.Event(), timeout_s=5)
        assert bus.send("events.cam", body(7), attachment=picture)
        assert bus.send("events.cam", body(8))
        assert sub.poll(5000)
        topic, payload, attached = sub.recv_multipart()
        assert sub.poll(5000)
        second = sub.recv_multipart()
    finally:
        sub.close(linger=0)
        ctx.term()
        bus.close()
    assert (topic, attached) == (b"events.cam", picture)
    assert json.loads(payload)["seq"] == 7
    assert len(second) == 2 and json.loads(second[1])["seq"] == 8


def test_sends_keep_the_interpreter_lock_where_libzmq_is_reachable(endpoint: str) -> None:
    """With many capture threads, every time the publish thread gives the interpreter lock up it queues behind them
    to take it back; its sends keep it. A thread woken just before 200 sends would run during them if a send gave
    the lock up (the switch interval is set long, so nothing else takes it from the sending thread); it runs once
    the test sleeps."""
    if mapped_libzmq() is None:
        pytest.skip("pyzmq links libzmq into its extension here: sends go through pyzmq")
    ran: list[float] = []
    wake = threading.Event()
    waiter = threading.Thread(target=lambda: (wake.wait(5), ran.append(time.monotonic())))
    waiter.start()
    bus = BusPublisher(endpoint)
    message = body(0)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        assert bus._direct is not None and bus._direct.path == mapped_libzmq()
        wake.set()
        for _ in range(200):
            assert bus.send("detections.cam", message)
        during_sends = len(ran)
        sent = time.monotonic()
        while not ran and time.monotonic() - sent < 5:
            time.sleep(0.001)  # gives the lock up: the woken thread runs now
    finally:
        sys.setswitchinterval(interval)
        waiter.join(5)
        bus.close()
    assert during_sends == 0
    assert ran and ran[0] >= sent


def test_only_one_mapped_libzmq_is_called_directly(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    line = "7f00-7f10 r-xp 00000000 08:01 42 {}\n"
    maps.write_text(line.format("/opt/x/libzmq-2f02.so.5.2.5") + "7f20-7f30 rw-p 00000000 00:00 0\n")
    assert mapped_libzmq(maps) == "/opt/x/libzmq-2f02.so.5.2.5"
    maps.write_text(line.format("/opt/x/libzmq-2f02.so.5.2.5") + line.format("/usr/lib/libzmq.so.5"))
    assert mapped_libzmq(maps) is None  # two libraries: which one owns pyzmq's sockets is not known
    maps.write_text(line.format("/opt/x/_zmq.cpython-312-x86_64-linux-gnu.so"))
    assert mapped_libzmq(maps) is None
    assert mapped_libzmq(tmp_path / "absent") is None
