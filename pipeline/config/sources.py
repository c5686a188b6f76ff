"""Where a stream's frames come from: files, webcams, RTSP/HTTP streams, image folders, the generated scene."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, model_validator

from pipeline.config.base import (
    _Strict,
)


def _refuse_nvdec_in_process(decoder: str, decode_process: bool | str, cpu_decoders: str) -> None:
    """A decoding process with a host ring hands on host frames: NVDEC's stay on the GPU (``gpu``'s ring is there)."""
    if decode_process is True and decoder == "nvdec":
        raise ValueError(
            f"decode_process: true needs a CPU decoder ({cpu_decoders}): NVDEC frames stay on the GPU"
            " (decode_process: gpu hands them over there)"
        )


DecodeGroup = Annotated[str | None, Field(min_length=1, max_length=64, pattern=r"^[\w.-]+$")]
"""A decoding group's name (see the file source's ``decode_group``)."""


def _refuse_group_in_thread(decode_group: str | None, decode_process: bool | str) -> None:
    if decode_group is not None and decode_process is False:
        raise ValueError("decode_group needs decode_process (true or gpu): it names a shared decoding process")


class FileSourceConfig(_Strict):
    """A video file, decoded as fast as the pipeline takes frames (``realtime`` paces it at its own fps)."""

    type: Literal["file"] = "file"
    path: Path
    realtime: bool = False
    """Pace the file at its own frame rate, as a camera delivers (a stand-in for a live source)."""
    loop: bool = False
    """Play the file again from the start each time it ends (never ends by itself)."""
    decoder: Literal["auto", "cpu", "pyav", "nvdec"] = "cpu"
    """``cpu``: OpenCV, BGR frames. ``pyav``: PyAV on the CPU, frames kept as the decoder's I420 planes (converted on
    the GPU). ``nvdec``: on the GPU (PyNvVideoCodec), frames stay there. ``auto``: NVDEC where it can run, else
    PyAV where it is installed, else OpenCV."""
    decode_process: bool | Literal["gpu"] = False
    """Decode in a child process (see :mod:`pipeline.sources.process`): a decoder that crashes takes only its child
    down, and its per-frame Python stays off the pipeline's interpreter lock. ``true``: CPU decoders, frames through
    shared memory. ``gpu``: the child puts each frame in a ring on the GPU, and the pipeline gets it there (as NVDEC's
    frames); one CUDA context per stream (``decode_group`` shares one). With ``decoder: nvdec`` the child decodes on
    NVDEC and the frame never leaves the GPU."""
    decode_group: DecodeGroup = None
    """Sources with the same ``decode_group`` share one decoding process, a thread each there (see
    :mod:`pipeline.sources.hosted`): one CUDA context for the group instead of one per source, and the group's
    demuxing and decoding off the pipeline's interpreter lock. A crash inside a native decoder takes the whole group
    down (its sources reconnect). Unset: a process of the source's own."""
    decode_threads: int | None = Field(None, ge=1, le=64)
    """Threads of a CPU decoder (FFmpeg's, through OpenCV or PyAV). ``None``: the box's cores shared among the
    streams decoded on the CPU, at least one each (FFmpeg's own choice, about one per core, for a lone stream):
    many decoders with a thread per core each crowd the cores, and a live stream decoded with frame threads waits
    a frame per thread before its first frame comes out."""

    @model_validator(mode="after")
    def _cpu_decoder_in_process(self) -> FileSourceConfig:
        _refuse_nvdec_in_process(self.decoder, self.decode_process, "cpu, pyav or auto")
        _refuse_group_in_thread(self.decode_group, self.decode_process)
        return self

    @property
    def live(self) -> bool:
        return self.realtime


class WebcamSourceConfig(_Strict):
    """A local camera: an index (``0``) or a device path (``/dev/video0``)."""

    type: Literal["webcam"] = "webcam"
    device: int | str = 0
    decode_process: bool | Literal["gpu"] = False
    """Decode in a child process (see the file source's ``decode_process``)."""
    decode_group: DecodeGroup = None
    """Share a decoding process with the other sources of this group (see the file source's ``decode_group``)."""

    @model_validator(mode="after")
    def _group_in_process(self) -> WebcamSourceConfig:
        _refuse_group_in_thread(self.decode_group, self.decode_process)
        return self

    @property
    def live(self) -> bool:
        return True


class UrlSourceConfig(_Strict):
    """An RTSP or HTTP stream (RTSP over TCP)."""

    type: Literal["url"] = "url"
    url: str = Field(pattern=r"^(rtsps?|https?)://")
    """The stream's address; its ``user:password@`` never appears in logs or messages (``${NAME}`` takes it from the
    environment)."""
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    """Longest wait for the stream to open (connect, describe, first packets)."""
    read_timeout_s: float = Field(10.0, gt=0, le=300)
    """A stream that delivers nothing for this long is treated as gone and reconnected."""
    decoder: Literal["auto", "cpu", "pyav", "nvdec"] = "pyav"
    """``pyav`` (the default): PyAV (FFmpeg) on the CPU, I420 frames, and the camera's packets kept for clips
    (``events.clips``: cut, not encoded again); cameras open together, where OpenCV opens one at a time in a process
    (about a second each, and a camera that hangs holds up the others' opening until its ``open_timeout_s``).
    ``cpu``: OpenCV (FFmpeg), BGR frames. ``nvdec``: PyAV demuxes (packets kept too), the GPU decodes
    (PyNvVideoCodec), frames stay there. ``auto``: NVDEC where PyNvVideoCodec and a CUDA GPU are present, else
    PyAV."""
    decode_process: bool | Literal["gpu"] = False
    """Decode in a child process (see the file source's ``decode_process``)."""
    decode_group: DecodeGroup = None
    """Share a decoding process with the other sources of this group (see the file source's ``decode_group``)."""
    decode_threads: int | None = Field(None, ge=1, le=64)
    """Threads of the CPU decoder (see the file source's ``decode_threads``)."""

    @model_validator(mode="after")
    def _cpu_decoder_in_process(self) -> UrlSourceConfig:
        _refuse_nvdec_in_process(self.decoder, self.decode_process, "cpu or auto")
        _refuse_group_in_thread(self.decode_group, self.decode_process)
        return self

    @property
    def live(self) -> bool:
        return True


class ImagesSourceConfig(_Strict):
    """Every image in a folder, in name order."""

    type: Literal["images"] = "images"
    path: Path
    fps: float = Field(30.0, gt=0, le=1000)
    """Frame rate the images' timestamps are counted at."""

    @property
    def live(self) -> bool:
        return False


class SyntheticSourceConfig(_Strict):
    """A generated street scene (no camera or file needed)."""

    type: Literal["synthetic"] = "synthetic"
    seed: int = Field(0, ge=0)
    frames: int = Field(300, ge=1)
    width: int = Field(640, ge=64, le=7680)
    height: int = Field(360, ge=64, le=4320)
    fps: float = Field(30.0, gt=0, le=240)

    @property
    def live(self) -> bool:
        return False


SourceConfig = Annotated[
    FileSourceConfig | WebcamSourceConfig | UrlSourceConfig | ImagesSourceConfig | SyntheticSourceConfig,
    Field(discriminator="type"),
]


SOURCE_TYPES = frozenset({"file", "webcam", "url", "images", "synthetic"})


def parse_source(text: str) -> dict[str, Any]:
    """Turn a ``--source`` string into a source config dict.

    ``0`` or ``/dev/video0`` → webcam; ``rtsp://…``/``http(s)://…`` → url;
    ``synthetic://?seed=7&frames=300`` → synthetic; a folder → images; anything
    else → a video file.
    """
    if text.isdigit():
        return {"type": "webcam", "device": int(text)}
    if re.match(r"^/dev/video\d+$", text):
        return {"type": "webcam", "device": text}
    if re.match(r"^(rtsps?|https?)://", text):
        return {"type": "url", "url": text}
    if text.startswith("synthetic://"):
        query = dict(parse_qsl(urlsplit(text).query))
        return {"type": "synthetic", **query}
    if Path(text).is_dir():
        return {"type": "images", "path": text}
    return {"type": "file", "path": text}
