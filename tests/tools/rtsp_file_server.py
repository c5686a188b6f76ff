"""An RTSP server for a video file's H.264, as cameras serve it: paced at the file's rate, looped, over TCP.

Pure Python with PyAV (no GStreamer), so it runs wherever edgesight's tests and benchmarks do, the GPU box
included. Every client of ``rtsp://HOST:PORT/<any path>`` gets its own stream of the file from the start: the
compressed packets as they are in the file (no re-encoding), RTP over the RTSP connection (interleaved,
RFC 2326 §10.12; H.264 payload per RFC 6184: single NAL units and FU-A fragments), SPS and PPS before every
keyframe. Clients that ask for UDP are told to use TCP (``461``). With ``--user``, requests need those
credentials by Basic authentication (``401`` otherwise). Each access unit goes out in one ``sendall``; with
``--processes N`` that many processes accept on the one port (sixty-odd cameras at 4 Mbit/s each are more RTP
packets than one interpreter sends in time), and they end with the first::

    python tests/tools/rtsp_file_server.py VIDEO PORT [--user U --password P] [--processes N]

Prints ``ready`` once it listens; serves until killed.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av

MAX_PAYLOAD = 1400
"""Largest RTP payload: NAL units beyond it are sent as FU-A fragments."""
CLOCK = 90_000
"""RTP clock rate for video."""


def parameter_sets(extradata: bytes) -> list[bytes]:
    """SPS and PPS NAL units from an ``avcC`` record (the MP4 form of H.264's decoder configuration)."""
    if len(extradata) < 7 or extradata[0] != 1:
        raise ValueError("not an avcC record: only H.264 in MP4/MKV (length-prefixed NAL units) is served")
    units, at = [], 6
    for count_mask in (0x1F, 0xFF):  # the SPS count shares its byte with reserved bits; then the PPS count
        count = extradata[at - 1] & count_mask
        for _ in range(count):
            (size,) = struct.unpack_from(">H", extradata, at)
            units.append(extradata[at + 2 : at + 2 + size])
            at += 2 + size
        at += 1
    return units


def nal_units(packet: bytes, length_size: int = 4) -> Iterator[bytes]:
    """The NAL units of one length-prefixed (AVCC) packet."""
    at = 0
    while at + length_size <= len(packet):
        size = int.from_bytes(packet[at : at + length_size], "big")
        yield packet[at + length_size : at + length_size + size]
        at += length_size + size


def rtp_payloads(nal: bytes) -> Iterator[bytes]:
    """One NAL unit as RTP payloads: itself when it fits, else FU-A fragments (RFC 6184 §5.8)."""
    if len(nal) <= MAX_PAYLOAD:
        yield nal
        return
    indicator = (nal[0] & 0xE0) | 28
    kind = nal[0] & 0x1F
    body = nal[1:]
    for start in range(0, len(body), MAX_PAYLOAD - 2):
        chunk = body[start : start + MAX_PAYLOAD - 2]
        header = kind | (0x80 if start == 0 else 0) | (0x40 if start + len(chunk) >= len(body) else 0)
        yield bytes([indicator, header]) + chunk


class Video:
    """The file's H.264 packets, read once, in decode order; the loop's length and the SDP's format line."""

    def __init__(self, path: Path, sets_in_band: bool = True) -> None:
        self.sets_in_band = sets_in_band
        """Whether keyframes carry the parameter sets, as most cameras send them, or only the SDP does."""
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.name != "h264":
                raise ValueError(f"{path}: {stream.codec_context.name}, not H.264")
            extradata = bytes(stream.codec_context.extradata or b"")
            self.sets = parameter_sets(extradata)
            length_size = (extradata[4] & 0x03) + 1
            tb = float(stream.time_base)
            rate = float(stream.average_rate or 25)  # read while open: PyAV 19 refuses a closed container's streams
            self.packets = [  # in decode order, as they are sent: (keyframe, send time, presentation time, NALs)
                (bool(p.is_keyframe), float(p.dts if p.dts is not None else p.pts) * tb, float(p.pts) * tb, units)
                for p in container.demux(stream)
                if p.size and p.pts is not None
                for units in [list(nal_units(bytes(p), length_size))]
            ]
        first_dts, first_pts = min(p[1] for p in self.packets), min(p[2] for p in self.packets)
        self.packets = [(k, d - first_dts, t - first_pts, n) for k, d, t, n in self.packets]
        self.duration = max(p[2] for p in self.packets) + 1.0 / rate
        sps = self.sets[0]
        self.fmtp = (
            f"packetization-mode=1;profile-level-id={sps[1:4].hex()};"
            f"sprop-parameter-sets={','.join(base64.b64encode(s).decode() for s in self.sets)}"
        )


class Session(threading.Thread):
    """One client's connection: answers its requests and, once it plays, sends the file, paced and looped."""

    def __init__(self, conn: socket.socket, video: Video, auth: str | None) -> None:
        super().__init__(daemon=True)
        self.conn, self.video, self.auth = conn, video, auth
        self.send_lock = threading.Lock()
        self.closed = threading.Event()
        self.session_id = f"{random.getrandbits(32):08X}"

    def run(self) -> None:
        buffer = b""
        try:
            while not self.closed.is_set():
                data = self.conn.recv(4096)
                if not data:
                    break
                buffer = self.take_requests(buffer + data)
        except OSError:
            pass  # the client went away: its session ends
        finally:
            self.closed.set()
            self.conn.close()

    def take_requests(self, buffer: bytes) -> bytes:
        """Answer the whole requests in ``buffer`` (skipping the client's interleaved RTCP); the rest waits."""
        while buffer:
            if buffer.startswith(b"$"):
                if len(buffer) < 4 or len(buffer) < 4 + struct.unpack_from(">H", buffer, 2)[0]:
                    return buffer
                buffer = buffer[4 + struct.unpack_from(">H", buffer, 2)[0] :]
            elif b"\r\n\r\n" in buffer:
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                self.answer(head.decode("latin-1"))
            else:
                return buffer
        return buffer

    def answer(self, request: str) -> None:
        lines = request.split("\r\n")
        method, url = lines[0].split(" ")[:2]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        cseq = headers.get("cseq", "0")
        if self.auth and headers.get("authorization") != f"Basic {self.auth}":
            self.reply(cseq, "401 Unauthorized", {"WWW-Authenticate": 'Basic realm="edgesight"'})
        elif method == "OPTIONS":
            self.reply(cseq, "200 OK", {"Public": "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"})
        elif method == "DESCRIBE":
            sdp = (
                "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=edgesight test camera\r\nt=0 0\r\n"
                "m=video 0 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\n"
                f"a=fmtp:96 {self.video.fmtp}\r\na=control:track0\r\n"
            )
            extra = {"Content-Type": "application/sdp", "Content-Base": url.rstrip("/") + "/"}
            self.reply(cseq, "200 OK", extra, sdp)
        elif method == "SETUP":
            if "interleaved" not in headers.get("transport", "") and "TCP" not in headers.get("transport", ""):
                self.reply(cseq, "461 Unsupported Transport")
                return
            transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
            self.reply(cseq, "200 OK", {"Transport": transport, "Session": f"{self.session_id};timeout=60"})
        elif method == "PLAY":
            self.reply(cseq, "200 OK", {"Session": self.session_id, "Range": "npt=0.000-"})
            threading.Thread(target=self.stream, daemon=True).start()
        elif method == "TEARDOWN":
            self.reply(cseq, "200 OK", {"Session": self.session_id})
            self.closed.set()
        else:  # GET_PARAMETER (keep-alive) and the rest
            self.reply(cseq, "200 OK", {"Session": self.session_id})

    def reply(self, cseq: str, status: str, headers: dict[str, str] | None = None, body: str = "") -> None:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        if body:
            lines.append(f"Content-Length: {len(body.encode())}")
        self.send(("\r\n".join(lines) + "\r\n\r\n" + body).encode())

    def send(self, data: bytes) -> None:
        with self.send_lock:
            self.conn.sendall(data)

    def stream(self) -> None:
        """The file's packets at their times, looped, each access unit's last packet marked."""
        seq, ssrc, start, loop = random.getrandbits(16), random.getrandbits(32), time.monotonic(), 0
        try:
            while not self.closed.is_set():
                for keyframe, dts, pts, nals in self.video.packets:
                    offset = loop * self.video.duration
                    delay = start + offset + dts - time.monotonic()
                    if delay > 0 and self.closed.wait(delay):
                        return
                    units = [*self.video.sets, *nals] if keyframe and self.video.sets_in_band else nals
                    payloads = [p for nal in units for p in rtp_payloads(nal)]
                    stamp = int((offset + pts) * CLOCK) & 0xFFFFFFFF
                    parts = []
                    for i, payload in enumerate(payloads):
                        marker = 0x80 if i == len(payloads) - 1 else 0
                        header = struct.pack(">BBHII", 0x80, marker | 96, seq, stamp, ssrc)
                        parts += (b"$\x00" + struct.pack(">H", len(header) + len(payload)), header, payload)
                        seq = (seq + 1) & 0xFFFF
                    self.send(b"".join(parts))  # the access unit at once: one lock, one system call
                loop += 1
        except OSError:
            self.closed.set()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a video file's H.264 over RTSP/TCP, paced and looped.")
    parser.add_argument("video", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--user")
    parser.add_argument("--password", default="")
    parser.add_argument("--processes", type=int, default=1, help="processes accepting clients on the port")
    parser.add_argument("--sets-in-sdp-only", action="store_true", help="keyframes without SPS/PPS (the SDP has them)")
    args = parser.parse_args()
    video = Video(args.video, sets_in_band=not args.sets_in_sdp_only)
    auth = base64.b64encode(f"{args.user}:{args.password}".encode()).decode() if args.user else None
    server = socket.create_server((args.host, args.port), reuse_port=False)
    for _ in range(max(1, args.processes) - 1):
        if os.fork() == 0:
            _die_with_parent(os.getppid())
            break
    else:
        print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Session(conn, video, auth).start()


def _die_with_parent(parent: int) -> None:
    """A forked server process ends when the first one does (which is the one its starter stops)."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent ended before the line above
        os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
