"""Packets made Annex B for NVDEC's parser: an RTSP camera's pass as they are, an MP4's go through FFmpeg's filter;
either way a decoder fed only those bytes decodes every picture (checked with PyAV's decoder, on the CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import serve_rtsp, stop_server

from pipeline.media.annexb import AnnexB, has_sequence_parameters, is_annex_b
from pipeline.sources.pyav_stream import open_url

av = pytest.importorskip("av", reason="PyAV is not installed")

NAL_SPS = 7


def _demuxed(container: Any, count: int) -> list[Any]:
    stream = container.streams.video[0]
    packets = []
    for packet in container.demux(stream):
        if packet.size:
            packets.append(packet)
        if len(packets) == count:
            break
    return packets


def _nal_types(data: bytes) -> set[int]:
    """The H.264 unit types in Annex B ``data``."""
    parts = data.split(b"\x00\x00\x01")[1:]
    return {part[0] & 0x1F for part in parts if part}


def _decode(codec: str, units: list[bytes]) -> list[np.ndarray]:
    """Pictures a fresh decoder makes of Annex B bytes alone (no extradata, as NVDEC gets them)."""
    decoder = av.CodecContext.create(codec, "r")
    frames = [f.to_ndarray(format="gray") for data in units for f in decoder.decode(av.Packet(data))]
    return frames + [f.to_ndarray(format="gray") for f in decoder.decode(None)]


def _filtered(stream: Any, packets: list[bytes]) -> list[bytes]:
    """What FFmpeg's filter makes of the packets' bytes."""
    bsf = av.bitstream.BitStreamFilterContext(f"{stream.codec_context.name}_mp4toannexb", stream)
    return [bytes(out) for data in packets for out in bsf.filter(av.Packet(data))]


def test_an_rtsp_cameras_packets_pass_unfiltered_and_decode(h264_video: Path) -> None:
    server, url = serve_rtsp(h264_video, "pw-annexb")
    try:
        with open_url(av, url, "camera", 10.0, 5.0) as container:
            stream = container.streams.video[0]
            annexb = AnnexB(av, stream)
            packets = _demuxed(container, 30)
            sent = [bytes(p) for p in packets]
            units = [data for packet in packets for data in annexb.convert(packet)]
            assert not annexb.filtering, "the camera's packets are Annex B already: no filter"
            reference = _filtered(stream, sent)
    finally:
        stop_server(server)
    assert units == sent == reference, "unchanged, as FFmpeg's filter leaves them"
    assert all(is_annex_b(u) for u in units)
    pictures = _decode("h264", [annexb.parameter_sets + units[0], *units[1:]])
    assert len(pictures) >= 25, f"{len(pictures)} of 30 pictures decoded from the bytes handed on"
    assert len({int(p[40].argmax()) for p in pictures[:10]}) > 5, "the square moves: real pictures"


def test_an_mp4s_length_prefixed_packets_are_filtered_and_decode(h264_video: Path) -> None:
    with av.open(str(h264_video)) as container:
        stream = container.streams.video[0]
        annexb = AnnexB(av, stream)
        assert annexb.filtering and annexb.parameter_sets == b"", "avcC extradata: the filter puts the sets in"
        packets = _demuxed(container, 40)
        sent = [bytes(p) for p in packets]
        units = [data for packet in packets for data in annexb.convert(packet)]
    assert not any(is_annex_b(data) for data in sent), "the file's packets carry lengths, not start codes"
    assert all(is_annex_b(u) for u in units)
    assert NAL_SPS in _nal_types(units[0]), "the first keyframe comes with its parameter sets"
    with av.open(str(h264_video)) as container:
        direct = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    pictures = _decode("h264", units)
    assert len(pictures) == len(direct) == 40
    assert all(np.array_equal(a, b) for a, b in zip(pictures, direct, strict=True))


@pytest.mark.parametrize("encoder", ["libx264", "libx265"])
def test_keyframes_are_told_apart_by_their_parameter_sets_and_a_kept_packet_stays_whole(
    tmp_path: Path, encoder: str
) -> None:
    path = tmp_path / "sets.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(encoder, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = (
            {"g": "5", "bf": "0"} if encoder == "libx264" else {"x265-params": "keyint=5:bframes=0:log-level=none"}
        )
        for i in range(10):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 * i, np.uint8), format="bgr24")))
        out.mux(stream.encode())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        annexb = AnnexB(av, stream)
        packets = _demuxed(container, 10)
        before = [bytes(p) for p in packets]
        units = [(p.is_keyframe, data) for p in packets for data in annexb.convert(p, keep_packet=True)]
        after = [bytes(p) for p in packets]
    assert after == before, "the decoder's packets are left as they were"
    assert [has_sequence_parameters(data, codec) for _, data in units] == [key for key, _ in units]
    assert sum(key for key, _ in units) == 2
