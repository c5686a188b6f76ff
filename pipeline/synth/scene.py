"""A toy street seen from a fixed camera, with exact ground truth.

People, cars and bicycles (COCO labels) enter, cross the frame in both
directions (people also walk towards and away from the camera), overlap and
occlude each other, over a textured background with changing light and sensor
noise. Everything is a pure function of the seed and the frame index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

LABELS = ("person", "bicycle", "car")
"""Class names, in COCO's order (ids 0, 1, 2 as in COCO)."""

MIN_VISIBLE_FRACTION = 0.4
"""Objects with less of themselves in the frame and unoccluded than this are not training labels, and
scoring treats them as "ignore" regions (finding them is neither required nor an error)."""
MIN_VISIBLE_PIXELS = 60
"""Objects with fewer visible pixels are left out of the truth."""


@dataclass(frozen=True, slots=True)
class Actor:
    """One object's whole life: what it is, how it looks and where it goes."""

    track_id: int
    label: str
    start: int
    """First frame index of its path."""
    x0: float
    y0: float
    vx: float
    vy: float
    size: float
    """Height in pixels at the scene's reference depth."""
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    phase: float

    def position(self, index: int) -> tuple[float, float]:
        t = index - self.start
        return self.x0 + self.vx * t, self.y0 + self.vy * t


@dataclass(frozen=True, slots=True)
class TruthObject:
    track_id: int
    label: str
    box: tuple[int, int, int, int]
    polygon: list[list[int]]
    visible: float
    """Share of the object inside the frame and not hidden by nearer objects."""

    def to_json(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "label": self.label,
            "box": list(self.box),
            "polygon": self.polygon,
            "visible": self.visible,
        }


@dataclass(frozen=True, slots=True)
class RenderedFrame:
    index: int
    image: np.ndarray
    objects: tuple[TruthObject, ...]

    def truth_json(self) -> dict[str, Any]:
        h, w = self.image.shape[:2]
        return {"frame_index": self.index, "width": w, "height": h, "objects": [o.to_json() for o in self.objects]}


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    c = rng.integers(20, 236, 3)
    return int(c[0]), int(c[1]), int(c[2])


class StreetScene:
    """A deterministic street scene of ``frames`` frames at ``width``×``height``."""

    def __init__(
        self,
        seed: int = 0,
        frames: int = 300,
        width: int = 640,
        height: int = 360,
        fps: float = 30.0,
        occlusion: bool = True,
    ):
        """``occlusion=False`` keeps only objects that never overlap one another: a simple scene."""
        self.seed = seed
        self.frames = frames
        self.width = width
        self.height = height
        self.fps = fps
        self._scale = height / 360.0
        rng = np.random.default_rng(seed)
        self._background = self._make_background(rng)
        self.actors = self._make_actors(rng)
        if not occlusion:
            self.actors = self._apart(self.actors)

    def _apart(self, actors: list[Actor]) -> list[Actor]:
        """The actors, in order, that never come near an actor already kept."""
        kept: list[Actor] = []
        for actor in actors:
            clash = False
            for index in range(self.frames):
                if not self._on_screen(actor, index):
                    continue
                box = self._extent(actor, index)
                if any(self._on_screen(k, index) and _overlap(box, self._extent(k, index)) for k in kept):
                    clash = True
                    break
            if not clash:
                kept.append(actor)
        return kept

    # -- layout --------------------------------------------------------------------------------
    def _make_background(self, rng: np.random.Generator) -> np.ndarray:
        w, h = self.width, self.height
        img = np.zeros((h, w, 3), np.float32)
        horizon = int(h * rng.uniform(0.22, 0.32))
        sky = np.array(_colour(rng), np.float32) * 0.5 + 90
        img[:horizon] = sky
        x = 0
        while x < w:  # buildings
            bw = int(rng.uniform(0.06, 0.18) * w)
            top = int(horizon * rng.uniform(0.0, 0.6))
            img[top:horizon, x : x + bw] = np.array(_colour(rng), np.float32) * 0.6 + 40
            for wy in range(top + 6, horizon - 6, 14):  # windows
                for wx in range(x + 4, x + bw - 8, 12):
                    img[wy : wy + 6, wx : wx + 5] = (40, 50, 60) if rng.random() < 0.6 else (170, 190, 200)
            x += bw
        ground = np.array([95, 100, 105], np.float32) + rng.uniform(-25, 25, 3).astype(np.float32)
        img[horizon:] = ground
        yy, xx = np.mgrid[horizon:h, 0:w].astype(np.float32)
        freq = rng.uniform(9, 25)
        img[horizon:] += (8 * np.sin(xx / freq) * np.cos(yy / (freq * 0.7)))[..., None]  # paving texture
        for _ in range(int(rng.integers(2, 5))):  # lane / crossing markings
            y = int(rng.uniform(horizon + 10, h - 10))
            for mx in range(0, w, int(40 * self._scale)):
                img[y : y + max(2, int(3 * self._scale)), mx : mx + int(20 * self._scale)] = 205
        img += rng.normal(0, 5, img.shape).astype(np.float32)  # fixed texture noise
        self.horizon = horizon
        return np.clip(img, 0, 255)

    def _make_actors(self, rng: np.random.Generator) -> list[Actor]:
        w, h = self.width, self.height
        actors: list[Actor] = []
        # Roughly one new object every 12-30 frames, some already on screen at frame 0.
        t = -int(rng.integers(30, 90))
        track_id = 1
        while t < self.frames:
            label = str(rng.choice(LABELS, p=[0.5, 0.2, 0.3]))
            base = {"person": 70.0, "bicycle": 55.0, "car": 62.0}[label] * self._scale
            y_bottom = float(rng.uniform(self.horizon + 0.25 * (h - self.horizon), h * 0.98))
            depth = 0.55 + 0.6 * (y_bottom - self.horizon) / (h - self.horizon)
            size = base * depth * float(rng.uniform(0.8, 1.25))
            speed = {"person": (0.8, 2.2), "bicycle": (2.0, 4.0), "car": (3.0, 7.0)}[label]
            v = float(rng.uniform(*speed)) * self._scale
            vertical = label == "person" and rng.random() < 0.3
            if vertical:  # walks towards or away from the camera across the middle
                direction = 1.0 if rng.random() < 0.5 else -1.0
                x0 = float(rng.uniform(0.15 * w, 0.85 * w))
                y0 = self.horizon + size * 0.9 if direction > 0 else h + size
                vx, vy = float(rng.uniform(-0.3, 0.3)), direction * v * 0.6
            else:
                direction = 1.0 if rng.random() < 0.5 else -1.0
                half_width = size * 1.6
                x0 = -half_width if direction > 0 else w + half_width
                y0, vx, vy = y_bottom, direction * v, 0.0
            actors.append(
                Actor(track_id, label, t, x0, y0, vx, vy, size, _colour(rng), _colour(rng), float(rng.uniform(0, 6.3)))
            )
            track_id += 1
            t += int(rng.integers(8, 26))
        return actors

    # -- drawing -------------------------------------------------------------------------------
    def _depth_scale(self, y_bottom: float) -> float:
        return max(0.35, 0.55 + 0.6 * (y_bottom - self.horizon) / max(1, self.height - self.horizon))

    def _extent(self, actor: Actor, index: int) -> tuple[int, int, int, int]:
        """The region ``actor`` may cover at ``index``, not clipped to the frame."""
        x, yb = actor.position(index)
        reach = actor.size * 2.0
        return int(x - reach), int(yb - actor.size * 1.3), int(x + reach) + 1, int(yb + 2)

    def _draw(self, actor: Actor, index: int, canvas: np.ndarray, mask: np.ndarray, origin: tuple[int, int]) -> None:
        """Draw ``actor`` into ``canvas`` (colours) and ``mask`` (255 where it is), both starting at ``origin``."""
        x, yb = actor.position(index)
        s = actor.size
        if actor.vy != 0.0:  # perspective for people walking along the depth axis
            s = actor.size * self._depth_scale(yb) / self._depth_scale(actor.y0 if actor.vy > 0 else self.height)
        facing = 1 if actor.vx >= 0 else -1
        t = index - actor.start
        shapes: list[tuple[str, Any, tuple[int, int, int]]] = []
        if actor.label == "person":
            step = math.sin(actor.phase + t * 0.35)
            head_r = 0.11 * s
            hip_y, shoulder_y = yb - 0.47 * s, yb - 0.78 * s
            shapes += [
                ("circle", ((x, yb - 0.89 * s), head_r), (150, 170, 200)),
                ("ellipse", ((x, (hip_y + shoulder_y) / 2 + 0.02 * s), (0.16 * s, 0.19 * s)), actor.colour),
                ("line", ((x, hip_y), (x + 0.14 * s * step, yb), 0.09 * s), actor.accent),
                ("line", ((x, hip_y), (x - 0.14 * s * step, yb), 0.09 * s), actor.accent),
                ("line", ((x, shoulder_y + 0.03 * s), (x - 0.16 * s * step, hip_y + 0.05 * s), 0.06 * s), actor.colour),
            ]
        elif actor.label == "car":
            length = s * 2.4
            body_top = yb - 0.55 * s
            x1, x2 = x - length / 2, x + length / 2
            cab = [
                (x1 + 0.22 * length, body_top),
                (x1 + 0.35 * length, yb - s),
                (x1 + 0.72 * length, yb - s),
                (x1 + 0.85 * length, body_top),
            ]
            if facing < 0:
                cab = [(2 * x - px, py) for px, py in cab]
            shapes += [
                ("rect", ((x1, body_top), (x2, yb - 0.15 * s)), actor.colour),
                ("poly", cab, actor.colour),
                ("poly", [((px - x) * 0.8 + x, (py - body_top) * 0.75 + body_top) for px, py in cab], (60, 55, 50)),
                ("circle", ((x1 + 0.2 * length, yb - 0.17 * s), 0.17 * s), (25, 25, 25)),
                ("circle", ((x1 + 0.8 * length, yb - 0.17 * s), 0.17 * s), (25, 25, 25)),
            ]
        else:  # bicycle
            wheel = 0.3 * s
            wb = 1.05 * s
            rear, front = (x - facing * wb / 2, yb - wheel), (x + facing * wb / 2, yb - wheel)
            crank = (x, yb - wheel)
            seat = (x - facing * 0.15 * s, yb - 0.95 * s)
            bar = (x + facing * 0.4 * s, yb - 1.0 * s)
            thick = max(2.0, 0.06 * s)
            shapes += [
                ("ring", (rear, wheel, max(2.0, 0.07 * s)), (30, 30, 30)),
                ("ring", (front, wheel, max(2.0, 0.07 * s)), (30, 30, 30)),
                ("line", (rear, crank, thick), actor.colour),
                ("line", (crank, seat, thick), actor.colour),
                ("line", (seat, bar, thick), actor.colour),
                ("line", (bar, front, thick), actor.colour),
                ("line", (crank, bar, thick), actor.colour),
                ("line", (rear, seat, thick), actor.colour),
            ]
        for kind, geom, colour in shapes:
            for target, value in ((canvas, colour), (mask, 255)):
                _draw_shape(target, kind, geom, value, origin)

    def _on_screen(self, a: Actor, index: int) -> bool:
        if index < a.start:
            return False
        x, yb = a.position(index)
        reach = a.size * 1.6
        return -reach < x < self.width + reach and yb - a.size * 1.2 < self.height and yb > self.horizon

    def visible_actors(self, index: int) -> list[Actor]:
        """Actors whose path covers ``index`` and who are near the frame, far ones first."""
        out = [a for a in self.actors if self._on_screen(a, index)]
        return sorted(out, key=lambda a: (a.position(index)[1], a.track_id))

    def render(self, index: int) -> RenderedFrame:
        """The frame at ``index`` and its truth."""
        light = 0.85 + 0.2 * math.sin(2 * math.pi * index / 240 + self.seed)
        tint = np.array([1.0, 1.0 + 0.04 * math.sin(index / 90), 1.0 - 0.05 * math.sin(index / 70)], np.float32)
        image = self._background * (light * tint)
        drawn: list[tuple[Actor, tuple[int, int, int, int], np.ndarray, int]] = []
        for actor in self.visible_actors(index):  # far to near: nearer objects occlude farther ones
            ux1, uy1, ux2, uy2 = self._extent(actor, index)
            canvas = np.zeros((uy2 - uy1, ux2 - ux1, 3), np.uint8)
            mask = np.zeros((uy2 - uy1, ux2 - ux1), np.uint8)
            self._draw(actor, index, canvas, mask, (ux1, uy1))
            full_area = int(np.count_nonzero(mask))  # including any part outside the frame
            x1, y1 = max(ux1, 0), max(uy1, 0)
            x2, y2 = min(ux2, self.width), min(uy2, self.height)
            if x2 <= x1 or y2 <= y1:
                continue
            crop = (slice(y1 - uy1, y2 - uy1), slice(x1 - ux1, x2 - ux1))
            mask, canvas = mask[crop], canvas[crop]
            sel = mask > 0
            image[y1:y2, x1:x2][sel] = canvas[sel].astype(np.float32) * light
            drawn.append((actor, (x1, y1, x2, y2), mask, full_area))
        noise = np.random.default_rng((self.seed, index)).normal(0, 4.0, image.shape).astype(np.float32)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        return RenderedFrame(index, image, tuple(self._truth(drawn)))

    def _truth(self, drawn: list[tuple[Actor, tuple[int, int, int, int], np.ndarray, int]]) -> list[TruthObject]:
        """Visible objects, near to far; partly hidden or cut by the frame edge counts against visibility."""
        out = []
        covered = np.zeros((self.height, self.width), bool)
        for actor, (x1, y1, x2, y2), mask, area_full in reversed(drawn):  # near to far
            full = mask > 0
            visible = full & ~covered[y1:y2, x1:x2]
            covered[y1:y2, x1:x2] |= full
            area_vis = int(visible.sum())
            if area_full == 0 or area_vis < MIN_VISIBLE_PIXELS:
                continue
            ys, xs = np.nonzero(visible)
            box = (x1 + int(xs.min()), y1 + int(ys.min()), x1 + int(xs.max()) + 1, y1 + int(ys.max()) + 1)
            contours, _ = cv2.findContours(visible.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            largest = max(contours, key=cv2.contourArea)
            poly = cv2.approxPolyDP(largest, 1.0, True).reshape(-1, 2) + np.array([x1, y1])
            out.append(TruthObject(actor.track_id, actor.label, box, poly.tolist(), round(area_vis / area_full, 3)))
        return sorted(out, key=lambda o: o.track_id)


def _draw_shape(target: np.ndarray, kind: str, geom: Any, value: Any, origin: tuple[int, int]) -> None:
    ox, oy = origin

    def _pt(p: tuple[float, float]) -> tuple[int, int]:
        return round(p[0] - ox), round(p[1] - oy)

    colour = value if isinstance(value, tuple) else int(value)
    if kind == "circle":
        centre, r = geom
        cv2.circle(target, _pt(centre), max(1, round(r)), colour, -1, cv2.LINE_8)
    elif kind == "ring":
        centre, r, thick = geom
        cv2.circle(target, _pt(centre), max(1, round(r)), colour, max(1, round(thick)), cv2.LINE_8)
    elif kind == "ellipse":
        centre, axes = geom
        cv2.ellipse(target, _pt(centre), (max(1, round(axes[0])), max(1, round(axes[1]))), 0, 0, 360, colour, -1)
    elif kind == "line":
        a, b, thick = geom
        cv2.line(target, _pt(a), _pt(b), colour, max(1, round(thick)), cv2.LINE_8)
    elif kind == "rect":
        a, b = geom
        cv2.rectangle(target, _pt(a), _pt(b), colour, -1)
    elif kind == "poly":
        cv2.fillPoly(target, [np.array([_pt(p) for p in geom], np.int32)], colour)
