"""Faces found on person crops, with a scripted face detector at the engine seam: which face is a person's."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from engines.base import EngineInfo
from pipeline.config.model import FacesConfig
from pipeline.faces.messages import FaceJob
from pipeline.faces.stage import FaceStage
from pipeline.messages import Frame, FrameResult
from pipeline.queues import BoundedQueue, OverflowPolicy


class CropFaces:
    """A scripted face detector: the faces it is told of (frame pixels), given back in the crop's pixels for the
    crop it is shown (found by its top-left corner, which the test sets)."""

    def __init__(self, faces_in_frame: np.ndarray, crop_origin: tuple[int, int]) -> None:
        self.info = EngineInfo("scripted", "cpu", "fp32", "faces", "detect", 1, {0: "face"})
        self._faces = faces_in_frame
        self._origin = crop_origin

    def prepare(self, image: np.ndarray, layout: str = "bgr") -> np.ndarray:
        return image

    def infer(self, inputs: Sequence[Any], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        rows = self._faces.copy()
        rows[:, [0, 2]] -= self._origin[0]
        rows[:, [1, 3]] -= self._origin[1]
        return [rows for _ in inputs]

    def warmup(self, formats: object = ()) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_neighbours_face_in_the_crops_margin_is_not_the_persons() -> None:
    person = [100.0, 50.0, 200.0, 350.0]  # grown 10% to the crop: x 90-210, y 20-380
    own = [130.0, 60.0, 170.0, 100.0, 0.80, 0.0]
    neighbour = [196.0, 60.0, 230.0, 100.0, 0.99, 0.0]  # centred at x 213: in the crop, outside the person
    loose = [150.0, 55.0, 204.0, 95.0, 0.85, 0.0]  # centred inside, its right edge 4 px past the person's
    frame = Frame("cam", 0, 0.0, 0.0, np.zeros((400, 400, 3), np.uint8))
    result = FrameResult.from_rows(frame, np.array([[*person, 0.9, 0.0]], np.float32), {0: "person"})
    stop = threading.Event()
    found = []
    for faces in ([own, neighbour], [neighbour], [loose, neighbour]):
        detector = CropFaces(np.array(faces, np.float32), crop_origin=(90, 20))
        stage = FaceStage(
            BoundedQueue("faces.jobs", 1, OverflowPolicy.DROP_OLDEST, stop),
            BoundedQueue("faces.results", 1, OverflowPolicy.BLOCK, stop),
            FacesConfig(detector="scripted", search="persons", conf=0.5),
            stop,
            lambda _n, exc: None,
            detector=lambda d=detector: d,
        )
        stage.load()
        found.append(stage.process(FaceJob(result, np.array([7], np.int64))).faces)
    with_own, only_neighbour, with_loose = found
    assert len(with_own) == 1 and np.allclose(with_own.boxes[0, :4], own[:4]), (
        "the person's own face, not the likelier neighbour's"
    )
    assert len(only_neighbour) == 0, "a face centred outside the person's box is not theirs"
    assert np.allclose(with_loose.boxes[0, :4], [150, 55, 200, 95]), "a face's box is cut to its person's"
