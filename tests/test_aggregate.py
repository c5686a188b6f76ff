"""The fleet aggregator: two boxes' buses fanned into one endpoint, real sockets end to end."""

from __future__ import annotations

import threading
import time

from conftest import free_port

from pipeline.aggregate import Aggregator
from pipeline.bus import BusPublisher
from pipeline.schema import DetectionsMessage, StatusMessage, status_body
from pipeline.subscriber import Subscriber


def detections(sid: str, seq: int) -> dict[str, object]:
    return {
        "schema": "edgesight.detections/1",
        "stream_id": sid,
        "seq": seq,
        "frame_index": seq,
        "pts_ms": 0.0,
        "captured_at": 1.0,
        "published_at": 1.0,
        "width": 8,
        "height": 8,
        "model": "m",
        "detections": [],
    }


def test_two_boxes_reach_one_subscriber_through_the_aggregator() -> None:
    boxes = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    site = f"tcp://127.0.0.1:{free_port()}"
    buses = [BusPublisher(endpoint) for endpoint in boxes]
    aggregator = Aggregator(boxes, site)
    aggregator.start()
    stop = threading.Event()

    def publish() -> None:
        seq = 0
        while not stop.is_set():
            for i, bus in enumerate(buses):
                bus.send(f"detections.box{i}cam", detections(f"box{i}cam", seq))
                bus.send(f"status.box{i}cam", status_body(f"box{i}cam", "start", time.time()))
            seq += 1
            time.sleep(0.01)

    sender = threading.Thread(target=publish, daemon=True)
    sender.start()
    got: dict[str, list[int]] = {}
    try:
        with Subscriber(site, ["detections."]) as sub:  # the subscription travels through the proxy to each box
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(len(got.get(f"box{i}cam", [])) >= 20 for i in range(2)):
                msg = sub.recv(0.2)
                assert not isinstance(msg, StatusMessage), "a topic filter set downstream applies upstream"
                if isinstance(msg, DetectionsMessage):
                    got.setdefault(msg.stream_id, []).append(msg.seq)
    finally:
        stop.set()
        sender.join(5)
        aggregator.close()
        for bus in buses:
            bus.close()
    for i in range(2):
        seqs = got[f"box{i}cam"]
        assert len(seqs) >= 20 and seqs == sorted(seqs), "each box's stream arrives, in order"
