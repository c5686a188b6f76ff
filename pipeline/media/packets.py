"""A stream's compressed packets as the camera sent them, kept a few seconds, so that clips are cut without
encoding again."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from pipeline.media.annexb import AnnexB, has_sequence_parameters

MAX_PACKETS = 10_000
PACKETS_BEYOND_PRE_S = 10.0
"""A camera's packets are kept this much longer than a clip's ``pre_s``: its keyframes may be that far apart."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One compressed picture: its times in milliseconds of the stream's clock, and its bytes."""

    pts: int
    dts: int
    key: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class Codec:
    """What a muxer needs to write a stream's packets: the codec and the picture size (the parameter sets travel
    in the packets: Annex B, before each keyframe)."""

    name: str
    width: int
    height: int


class PacketRing:
    """Packets of one stream, kept from the last keyframe at least ``keep_s`` old; filled by the source's demuxer
    (in the capture thread), read by the stream's clip recorder (in its own)."""

    def __init__(self, keep_s: float) -> None:
        self.keep_ms = keep_s * 1000.0
        self.codec: Codec | None = None
        """Set by the source when it opens (again, after a reconnect)."""
        self._packets: deque[tuple[int, Packet]] = deque()
        self._keys: deque[tuple[int, int]] = deque()
        """Number and time of each keyframe kept."""
        self._seq = 0
        self._lock = threading.Lock()
        self._annexb: AnnexB | None = None
        self._ms_per_tick = 0.0

    def start(self, stream: Any, annexb: AnnexB | None = None) -> None:
        """The source (re)opened PyAV's ``stream`` (H.264 or H.265): what follows is its packets, made Annex B
        (:class:`~pipeline.media.annexb.AnnexB`) with the parameter sets before each keyframe, which a clip needs
        to start there: an MP4 file's length-prefixed packets are not muxable alone, and a camera that sends its
        SPS and PPS only in its SDP gets them put before its keyframes here. ``annexb``: the source's own, where it
        converts the packets itself (and hands them on with :meth:`add_annex_b`)."""
        import av

        ctx = stream.codec_context
        self.reset(Codec(ctx.name, ctx.width, ctx.height))
        with self._lock:
            self._annexb = annexb or AnnexB(av, stream)
            self._ms_per_tick = float(stream.time_base) * 1000.0

    def reset(self, codec: Codec) -> None:
        """What follows is of ``codec``: packets of another codec or size go."""
        with self._lock:
            if codec != self.codec:
                self._packets.clear()
                self._keys.clear()
            self.codec = codec

    def add_demuxed(self, packet: Any) -> None:
        """A packet from the stream given to :meth:`start`, which its decoder still needs (one without a time is
        skipped)."""
        if packet.size == 0 or packet.pts is None or self._annexb is None:
            return
        for data in self._annexb.convert(packet, keep_packet=True):
            self.add_annex_b(data, packet.pts, packet.dts, packet.is_keyframe)

    def add_annex_b(self, data: bytes, pts: int | None, dts: int | None, key: bool) -> None:
        """A packet of the stream given to :meth:`start`, already in Annex B form (an NVDEC camera converts its
        packets once, for its decoder and for this); times in the stream's ticks."""
        if pts is None or self._annexb is None or self.codec is None:
            return
        sets = self._annexb.parameter_sets
        if key and sets and not has_sequence_parameters(data, self.codec.name):
            data = sets + data
        tick = self._ms_per_tick
        self.add(Packet(round(pts * tick), round((dts if dts is not None else pts) * tick), bool(key), data))

    def add(self, packet: Packet) -> None:
        with self._lock:
            self._seq += 1
            self._packets.append((self._seq, packet))
            if packet.key:
                self._keys.append((self._seq, packet.pts))
            keep_from = packet.pts - self.keep_ms
            # whole groups of pictures go: from the oldest keyframe while the next one is old enough
            while len(self._keys) >= 2 and self._keys[1][1] <= keep_from:
                self._keys.popleft()
                while self._packets and self._packets[0][0] < self._keys[0][0]:
                    self._packets.popleft()
            while len(self._packets) > MAX_PACKETS:  # a stream that sends no keyframe: bounded all the same
                self._packets.popleft()

    def since(self, seq: int) -> tuple[int, list[Packet]]:
        """The packets added after ``seq`` (0: all kept) and the newest's number."""
        with self._lock:
            new = max(0, min(self._seq - seq, len(self._packets)))  # numbers run on without gaps: the newest ``new``
            return self._seq, [p for _, p in itertools.islice(reversed(self._packets), new)][::-1]
