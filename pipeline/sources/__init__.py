"""Video sources: files, webcams, RTSP/HTTP streams, image folders and generated scenes."""

from __future__ import annotations

from pipeline.config import (
    FileSourceConfig,
    ImagesSourceConfig,
    SourceConfig,
    SyntheticSourceConfig,
    UrlSourceConfig,
    WebcamSourceConfig,
)
from pipeline.media.packets import PacketRing
from pipeline.sources.base import RawFrame, Source
from pipeline.sources.hosted import HostedSource, decode_host
from pipeline.sources.images import ImageFolderSource
from pipeline.sources.looping import LoopingSource
from pipeline.sources.nvdec import FallbackSource, NvdecFileSource, nvdec_available
from pipeline.sources.nvdec_stream import NvdecStreamSource, nvdec_stream_available
from pipeline.sources.paced import PacedSource
from pipeline.sources.process import ProcessSource
from pipeline.sources.pyav import PyAvFileSource, pyav_available
from pipeline.sources.pyav_stream import PyAvStreamSource
from pipeline.sources.synthetic import SyntheticSource
from pipeline.sources.video import StreamUrlSource, VideoFileSource, WebcamSource

__all__ = ["RawFrame", "Source", "make_source", "probe_source"]


def _file_source(config: FileSourceConfig, packets: PacketRing | None = None) -> Source:
    """The decoder ``config.decoder`` names; ``auto``: NVDEC, else PyAV, else OpenCV, by what is installed.
    ``packets``: where PyAV keeps the file's packets (clips)."""
    if config.decoder == "nvdec":
        return NvdecFileSource(config.path)
    cpu: Source = VideoFileSource(config.path, config.decode_threads)
    if config.decoder == "pyav" or (config.decoder == "auto" and pyav_available()):
        cpu = PyAvFileSource(config.path, config.decode_threads, packets)
    if config.decoder == "auto" and nvdec_available():
        return FallbackSource(NvdecFileSource(config.path), cpu)
    return cpu


def _url_source(config: UrlSourceConfig, packets: PacketRing | None = None) -> Source:
    """The decoder ``config.decoder`` names; ``auto``: NVDEC where it can run (falling back if it cannot open), else
    PyAV. ``packets``: where PyAV's demuxer keeps the camera's packets (clips)."""
    timeouts = (config.open_timeout_s, config.read_timeout_s)
    if config.decoder == "cpu":
        return StreamUrlSource(config.url, *timeouts, config.decode_threads)
    cpu: Source = PyAvStreamSource(config.url, *timeouts, config.decode_threads, packets)
    if config.decoder == "pyav" or (config.decoder == "auto" and not nvdec_stream_available()):
        return cpu
    gpu = NvdecStreamSource(config.url, *timeouts, packets=packets)
    return gpu if config.decoder == "nvdec" else FallbackSource(gpu, cpu)


def _in_child(config: FileSourceConfig | WebcamSourceConfig | UrlSourceConfig) -> SourceConfig:
    """What a decoding process runs: the same source, in its own thread there (``auto`` never picks NVDEC; an
    explicit ``nvdec`` stays, the ring being on the GPU)."""
    update: dict[str, object] = {"decode_process": False, "decode_group": None}
    if isinstance(config, (FileSourceConfig, UrlSourceConfig)) and config.decoder == "auto":
        update["decoder"] = "pyav" if pyav_available() else "cpu"
    return config.model_copy(update=update)


def make_source(config: SourceConfig, packets: PacketRing | None = None) -> Source:
    """Build (but do not open) the source a config describes. ``packets``: where a source that demuxes with PyAV
    keeps the compressed packets it reads (clips); other sources leave it empty."""
    source: Source
    if isinstance(config, (FileSourceConfig, WebcamSourceConfig, UrlSourceConfig)) and config.decode_process:
        on_gpu = config.decode_process == "gpu"
        if config.decode_group is not None:
            return HostedSource(_in_child(config), make_source, decode_host(config.decode_group), on_gpu=on_gpu)
        return ProcessSource(_in_child(config), make_source, on_gpu=on_gpu)
    if isinstance(config, FileSourceConfig):
        source = LoopingSource(lambda: _file_source(config)) if config.loop else _file_source(config, packets)
        return PacedSource(source) if config.realtime else source
    if isinstance(config, WebcamSourceConfig):
        return WebcamSource(config.device)
    if isinstance(config, UrlSourceConfig):
        return _url_source(config, packets)
    if isinstance(config, ImagesSourceConfig):
        return ImageFolderSource(config.path, config.fps)
    if isinstance(config, SyntheticSourceConfig):
        return SyntheticSource(config.seed, config.frames, config.width, config.height, config.fps)
    raise TypeError(f"unknown source config {config!r}")


def probe_source(config: SourceConfig) -> None:
    """Open the source ``config`` describes and release it: raises what opening it at start-up would."""
    source = make_source(config)
    try:
        source.open()
    finally:
        source.release()
