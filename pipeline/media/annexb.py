"""A stream's H.264/H.265 packets in Annex B form (start codes before each unit), as NVDEC's parser takes them."""

from __future__ import annotations

from typing import Any

START_CODES = (b"\x00\x00\x00\x01", b"\x00\x00\x01")


def is_annex_b(data: bytes) -> bool:
    """``data`` begins with a start code."""
    return data.startswith(START_CODES)


def has_sequence_parameters(data: bytes, codec: str) -> bool:
    """``data`` (Annex B) holds a sequence parameter set: an SPS NAL unit (type 7 in H.264, 33 in H.265)."""
    at = data.find(b"\x00\x00\x01")
    while 0 <= at < len(data) - 3:
        header = data[at + 3]
        if ((header >> 1) & 0x3F) == 33 if codec == "hevc" else (header & 0x1F) == 7:
            return True
        at = data.find(b"\x00\x00\x01", at + 3)  # slices hold no start code (emulation prevention): few steps
    return False


class AnnexB:
    """Turns one PyAV stream's demuxed packets into Annex B byte strings.

    An RTSP camera's packets are Annex B already (FFmpeg's RTP depacketizer
    writes the start codes), so they pass as they are, and no filter is made.
    FFmpeg's ``*_mp4toannexb`` filter would pass them unchanged too, but
    through three calls that each give the interpreter lock up, and with a
    hundred capture threads the lock is busy: each return waits its turn.
    Length-prefixed packets (MP4 or FLV over HTTP, whose ``avcC`` extradata
    says so) go through the filter.
    """

    def __init__(self, av: Any, stream: Any) -> None:
        self._av = av
        self._stream = stream
        extradata = bytes(stream.codec_context.extradata or b"")
        self.parameter_sets = extradata if is_annex_b(extradata) else b""
        """The parameter sets the stream's description carries (an RTSP camera's SDP), to go before its first
        packet; empty where the filter puts them in."""
        self._filter: Any = None
        if extradata and not self.parameter_sets:
            self._filter = self._make_filter()

    @property
    def filtering(self) -> bool:
        """Packets go through FFmpeg's filter (they came length-prefixed)."""
        return self._filter is not None

    def convert(self, packet: Any, keep_packet: bool = False) -> list[bytes]:
        """``packet``'s bytes in Annex B form: itself, or what the filter makes of it (none, one or more).
        ``keep_packet``: a decoder still needs the packet, so the filter (which takes what it is given) gets a copy."""
        if self._filter is None:
            data = bytes(packet)
            if is_annex_b(data):
                return [data]
            self._filter = self._make_filter()  # no extradata said so, but the packets carry lengths
        if keep_packet:
            packet = self._copy(packet)
        return [bytes(out) for out in self._filter.filter(packet)]

    def _copy(self, packet: Any) -> Any:
        copy = self._av.Packet(bytes(packet))
        copy.pts, copy.dts, copy.time_base, copy.is_keyframe = (
            packet.pts,
            packet.dts,
            packet.time_base,
            packet.is_keyframe,
        )
        return copy

    def _make_filter(self) -> Any:
        name = self._stream.codec_context.name
        return self._av.bitstream.BitStreamFilterContext(f"{name}_mp4toannexb", self._stream)
