"""OpenCV (FFmpeg / V4L2) sources: video files, webcams and RTSP/HTTP streams."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import PermanentSourceError, SourceError
from pipeline.secrecy import redact
from pipeline.sources.base import DecoderSource, RawFrame
from pipeline.sources.rtsp import credentials, describe

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def to_bgr(image: np.ndarray, where: str) -> np.ndarray:
    """Bring a decoded image to 8-bit, 3-channel BGR, or fail with a clear message."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise SourceError(f"{where}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise SourceError(f"{where}: unsupported frame shape {image.shape}")


def thread_params(threads: int | None) -> list[int]:
    """OpenCV capture parameters that set FFmpeg's decoding threads (none: its own choice)."""
    return [] if threads is None else [cv2.CAP_PROP_N_THREADS, threads]


def check_video_file(path: Path) -> None:
    """Fail with a one-line reason when ``path`` is missing, not a file, or empty."""
    if not path.exists():
        raise SourceError(f"video file not found: '{path}'")
    if not path.is_file():
        raise SourceError(f"not a file: '{path}'")
    if path.stat().st_size == 0:
        raise SourceError(f"video file is empty (0 bytes): '{path}'")


class _CaptureSource(DecoderSource):
    """Common read loop over a ``cv2.VideoCapture``."""

    description = "capture"

    def __init__(self) -> None:
        super().__init__()
        self._cap: cv2.VideoCapture | None = None

    def _open_capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def open(self) -> None:
        self._cap = self._open_capture()
        self._fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total_frames = count if count > 0 and not self.live else None
        self._prime()

    def _decode(self) -> RawFrame | None:
        assert self._cap is not None
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        pts = self._timestamp(float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0))
        return RawFrame(to_bgr(image, self.description), pts)

    def _is_open(self) -> bool:
        return self._cap is not None

    def read(self) -> RawFrame | None:
        frame = super().read()
        if frame is None and self.live and not self._interrupted.is_set():
            raise SourceError(f"{self.description}: stream stopped delivering frames")
        return frame

    def release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class VideoFileSource(_CaptureSource):
    """A video file decoded by FFmpeg through OpenCV."""

    live = False

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.description = f"video file '{self.path}'"

    def _open_capture(self) -> cv2.VideoCapture:
        check_video_file(self.path)
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, thread_params(self.threads))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video file '{self.path}': not a video or an unsupported format")
        return cap


class WebcamSource(_CaptureSource):
    """A local camera by index (``0``) or device path (``/dev/video0``)."""

    live = True

    def __init__(self, device: int | str) -> None:
        super().__init__()
        self.device = device
        self.description = f"webcam {device}"

    def _open_capture(self) -> cv2.VideoCapture:
        if isinstance(self.device, str) and not Path(self.device).exists():
            raise SourceError(f"webcam device not found: '{self.device}'")
        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2) if os.name == "posix" else cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.description}: no such camera, or it is busy")
        return cap


class StreamUrlSource(_CaptureSource):
    """An RTSP or HTTP stream, read over TCP with open and read timeouts; named without its user name and password."""

    live = True

    def __init__(
        self, url: str, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0, threads: int | None = None
    ) -> None:
        super().__init__()
        self.url = url
        self.threads = threads
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.description = f"stream '{redact(url)}'"

    def _open_capture(self) -> cv2.VideoCapture:
        if self.url.startswith("rtsp") and FFMPEG_OPTIONS_ENV not in os.environ:
            # FFmpeg reads its demuxer options from the environment when the capture opens.
            os.environ[FFMPEG_OPTIONS_ENV] = "rtsp_transport;tcp"
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.read_timeout_s * 1000),
            *thread_params(self.threads),
        ]
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise self._open_error()
        return cap

    def _open_error(self) -> SourceError:
        return stream_open_error(self.url, self.description, self.open_timeout_s)


def stream_open_error(url: str, description: str, open_timeout_s: float) -> SourceError:
    """Why a stream did not open, as far as an RTSP server tells (asked with the URL's credentials)."""
    answer = describe(url, min(open_timeout_s, 5.0)) if url.startswith("rtsp:") else None
    if answer is None or answer.status == 200:
        return SourceError(
            f"cannot open {description}: unreachable, wrong path or no video (waited up to {open_timeout_s:g} s)"
        )
    if answer.status in RTSP_PERMANENT:
        what = RTSP_PERMANENT[answer.status]
        if answer.status == 401:
            what += " (wrong user name or password)" if credentials(url) else " (no user name and password given)"
        return PermanentSourceError(f"cannot open {description}: the server answered {what}")
    return SourceError(f"cannot open {description}: the server answered {answer.status} {answer.reason}".rstrip())


RTSP_PERMANENT = {
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found (wrong path?)",
}
"""RTSP answers that retrying will not change at start-up: a stream that gets one at its first connection ends with
this error (a supervised stream that was connected before retries them, as a rebooting camera gives them)."""
