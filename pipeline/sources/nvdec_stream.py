"""RTSP/HTTP streams demuxed by PyAV and decoded on the GPU's NVDEC engines by PyNvVideoCodec.

PyNvVideoCodec's own demuxer opens a URL with no options and no interrupt: no
TCP transport, no timeouts, a stalled camera blocks forever, and a camera it
cannot open ends the process (2.2.4). So PyAV (FFmpeg
with ``rtsp_transport=tcp`` and open/read timeouts) demuxes, and each packet,
in Annex B form (:class:`~pipeline.media.annexb.AnnexB`), goes to
PyNvVideoCodec's low-level decoder, in torch's CUDA context and on a stream
of the camera's own (:mod:`pipeline.sources.cuda_driver`). Each frame is
copied, on that stream, to our own CUDA ``(H, W, 3)`` uint8 BGR tensor, as
:mod:`pipeline.sources.nvdec` does for files. A stall or the end of the stream is a :class:`SourceError`, so a
supervised stream reconnects (with a fresh decoder) as a CPU-decoded one does.
Streams without B-frames (almost every IP camera) are decoded with no display
delay; others in display order, a few frames late, and the frames the decoder
gives back together are spread over their own time (:class:`~pipeline.sources.paced.BurstSpacer`),
so that a camera's queue of one does not drop all but the last.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from engines.base import FrameFormat
from engines.capture_gate import GATE
from pipeline.errors import PermanentSourceError, SourceError
from pipeline.media.annexb import AnnexB
from pipeline.media.packets import PacketRing
from pipeline.secrecy import redact
from pipeline.sources.base import DecoderSource, RawFrame
from pipeline.sources.cuda_driver import primary_context
from pipeline.sources.nvdec import bgr_copy, nvdec_available
from pipeline.sources.paced import BurstSpacer
from pipeline.sources.pyav import pyav_available
from pipeline.sources.pyav_stream import failure_reason, open_url

log = logging.getLogger(__name__)

CODECS = ("h264", "hevc")
"""What NVDEC decodes here, by FFmpeg's codec name."""


def nvdec_stream_available() -> bool:
    """PyNvVideoCodec and PyAV are installed and torch sees a CUDA GPU."""
    return pyav_available() and nvdec_available()


def _modules(description: str) -> tuple[Any, Any]:
    """PyAV and PyNvVideoCodec, or a one-line error saying which is missing (retrying cannot fix that)."""
    try:
        import av
    except ImportError:
        raise PermanentSourceError(f"{description}: PyAV is not installed (pip install av)") from None
    try:
        import PyNvVideoCodec as nvc
    except ImportError:
        raise PermanentSourceError(
            f"{description}: PyNvVideoCodec is not installed (pip install PyNvVideoCodec)"
        ) from None
    if not nvdec_available():
        raise PermanentSourceError(f"{description}: no CUDA GPU for NVDEC")
    return av, nvc


class NvdecStreamSource(DecoderSource):
    """An RTSP or HTTP stream decoded by NVDEC; ``read`` returns CUDA tensors (BGR); named without its password."""

    live = True

    def __init__(
        self,
        url: str,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        gpu_id: int = 0,
        packets: PacketRing | None = None,
    ) -> None:
        """``packets``: where the camera's packets are also kept, as it sent them (clips)."""
        super().__init__()
        self.url = url
        self.packets = packets
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.gpu_id = gpu_id
        self.description = f"stream '{redact(url)}' (NVDEC)"
        self._av: Any = None
        self._nvc: Any = None
        self._container: Any = None
        self._packets: Iterator[Any] | None = None
        self._annexb: AnnexB | None = None
        self._decoder: Any = None
        self._stream: Any = None
        """The CUDA stream this camera's decoder and copies run on (torch's, in the primary context)."""
        self._low_latency = True
        self._prefix = b""
        self._ms_per_tick = 0.0
        self._ready: collections.deque[tuple[RawFrame, bool]] = collections.deque()
        """Decoded frames, each with whether it came back from the decoder after another in the same call."""
        self.spacer = BurstSpacer(self._interrupted)

    def open(self) -> None:
        self._av, self._nvc = _modules(self.description)
        self._container = self._open_container()
        try:
            self._open_decoder()
            self._prime()
        except SourceError:
            self.release()
            raise

    def _open_container(self) -> Any:
        return open_url(self._av, self.url, self.description, self.open_timeout_s, self.read_timeout_s)

    def _open_decoder(self) -> None:
        nvc = self._nvc
        if not self._container.streams.video:
            raise SourceError(f"{self.description}: the stream has no video")
        stream = self._container.streams.video[0]
        name = stream.codec_context.name
        if name not in CODECS:
            raise SourceError(f"{self.description}: NVDEC decodes h264 or hevc here, not {name}")
        self._annexb = AnnexB(self._av, stream)
        self._prefix = self._annexb.parameter_sets  # SPS/PPS from the SDP, once
        self._low_latency = not stream.codec_context.has_b_frames  # no display delay: wrong with B-frames
        latency = nvc.DisplayDecodeLatencyType.LOW if self._low_latency else nvc.DisplayDecodeLatencyType.NATIVE
        self._ms_per_tick = float(stream.time_base or 0) * 1000.0
        self._fps = float(stream.average_rate or stream.guessed_rate or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width and height:  # from the stream's description, before a frame decodes: start-up warms up on it
            self._format_known(FrameFormat((height, width, 3)))
        try:
            with GATE.work():  # a camera may connect while the engine captures graphs: creating allocates on the GPU
                self._decoder = self._create_decoder(nvc, name, latency)
        except Exception as exc:  # the decoder raises plain exceptions (no engine, unsupported profile, ...)
            raise SourceError(f"{self.description}: NVDEC cannot decode it ({exc})".split("\n")[0]) from exc
        self._packets = self._container.demux(stream)
        if self.packets is not None:
            self.packets.start(stream, self._annexb)  # one conversion for the decoder and the ring

    def _create_decoder(self, nvc: Any, name: str, latency: Any) -> Any:
        """A decoder in torch's context, on a stream of its own (see :mod:`pipeline.sources.cuda_driver`)."""
        import torch

        self._stream = torch.cuda.Stream(self.gpu_id)  # from torch's pool: non-blocking, in the primary context
        return nvc.CreateDecoder(
            gpuid=self.gpu_id,
            codec=getattr(nvc.cudaVideoCodec, name.upper()),
            cudacontext=primary_context(self.gpu_id),
            cudastream=self._stream.cuda_stream,
            usedevicememory=True,
            outputColorType=nvc.OutputColorType.RGB,
            latency=latency,
        )

    def _prime(self) -> None:
        announced = self.frame_format
        super()._prime()
        if announced is not None and announced != self.frame_format:
            decoded = self.frame_format
            log.warning("%s: its stream announced frames of %s, it decodes %s", self.description, announced, decoded)

    def _is_open(self) -> bool:
        return self._decoder is not None

    def _decode(self) -> RawFrame | None:
        assert self._packets is not None
        while not self._ready:
            if self._interrupted.is_set():
                return None
            try:
                packet = next(self._packets)
            except StopIteration:
                return None
            except (self._av.error.ExitError, TimeoutError):
                raise SourceError(
                    f"{self.description}: stream stopped delivering frames (nothing for {self.read_timeout_s:g} s)"
                ) from None
            except (self._av.FFmpegError, OSError) as exc:
                raise SourceError(
                    f"{self.description}: stream stopped delivering frames ({failure_reason(exc)})"
                ) from None
            if packet.size == 0:  # not ``dts is None``: a stream's first keyframe may come without timestamps
                continue
            assert self._annexb is not None
            for data in self._annexb.convert(packet):
                if self.packets is not None:  # the same bytes: converted once
                    self.packets.add_annex_b(data, packet.pts, packet.dts, packet.is_keyframe)
                self._submit(data, packet.pts)
        frame, burst = self._ready.popleft()
        self.spacer.release(frame.pts_ms, burst)
        return frame

    def _submit(self, annexb: bytes, packet_pts: int | None) -> None:
        """Hand one Annex B packet to the decoder; queue the frames it gives back, copied."""
        nvc = self._nvc
        data = np.frombuffer(self._prefix + annexb, np.uint8)  # alive until Decode returns
        self._prefix = b""
        pkt = nvc.PacketData()
        pkt.bsl_data = int(data.ctypes.data)
        pkt.bsl = int(data.size)
        pkt.pts = int(packet_pts) if packet_pts is not None else 0
        if self._low_latency:
            _set_flag(pkt, nvc.VideoPacketFlag.ENDOFPICTURE)  # one packet is one whole picture
        with GATE.work():  # never while the engine captures a graph: the decoder's syncs would spoil it
            try:
                frames = self._decoder.Decode(pkt)
            except Exception as exc:
                raise SourceError(f"{self.description}: NVDEC failed ({exc})".split("\n")[0]) from exc
            for i, frame in enumerate(frames):
                pts = self._timestamp(float(frame.timestamp) * self._ms_per_tick)
                self._ready.append((RawFrame(bgr_copy(frame, self._stream), pts), i > 0))

    def read(self) -> RawFrame | None:
        frame = super().read()
        if frame is None and not self._interrupted.is_set():
            raise SourceError(f"{self.description}: stream stopped delivering frames")
        return frame

    def release(self) -> None:
        container, self._container = self._container, None
        self._decoder = self._annexb = self._packets = None
        self._ready.clear()
        self.spacer.reset()
        if container is not None:
            container.close()


def _set_flag(pkt: Any, flag: Any) -> None:
    """Set a packet's decode flag, as the enum or as its number (bindings differ between releases)."""
    try:
        pkt.decode_flag = flag
    except TypeError:
        pkt.decode_flag = int(flag)
