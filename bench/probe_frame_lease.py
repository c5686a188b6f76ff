"""What handing on a frame from a ring on the GPU costs the pipeline's process, per frame.

A capture thread of a decoding process or group hands on each frame as a tensor on its ring slot, leased so the
slot is given back once nothing reads it (:func:`pipeline.sources.ring.leased`). Every torch call gives up the
interpreter's lock and queues to take it back, so besides the time of each way (median of 7 rounds of ``--calls``
frames, made and then dropped) this counts the turns another thread got while the frames were made: how often
the lock changed hands.

- ``view each frame``: the slot sliced and viewed in the frame's shape for every frame, the lease on that view;
- ``slot view kept``: each slot's view made once per shape (:meth:`ProcessSource._slot_view`), the lease on the
  imported tensor's own storage (what the pipeline does).

::

    python bench/probe_frame_lease.py [--device cuda] [--calls 300] [--out probe.json]

One JSON document on stdout (``--device cpu`` runs anywhere; the figures that matter are CUDA's).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (1080, 1920, 3)
SLOT_BYTES = 1088 * 1920 * 3  # a slot sized for the largest frame, larger than this one
ROUNDS = 7


def ways(device: str) -> dict[str, Callable[[], Any]]:
    """The two hand-overs, each making one leased frame a call."""
    import torch
    from torch.utils.dlpack import from_dlpack, to_dlpack

    from pipeline.sources.base import RawFrame
    from pipeline.sources.ring import leased

    whole = torch.zeros(SLOT_BYTES, dtype=torch.uint8, device=device)
    count = SHAPE[0] * SHAPE[1] * SHAPE[2]
    kept = whole[:count].view(SHAPE)
    freed: list[int] = []

    def view_each_frame() -> Any:
        view = whole[:count].view(SHAPE)
        weakref.finalize(view, freed.append, 0)
        image: Any = from_dlpack(to_dlpack(view))
        return RawFrame(image, 0.0, "bgr")

    def slot_view_kept() -> Any:
        return RawFrame(leased(kept, freed.append, 0), 0.0, "bgr")

    return {"view each frame": view_each_frame, "slot view kept": slot_view_kept}


def timed(make: Callable[[], Any], calls: int) -> dict[str, float]:
    """Median microseconds a frame to make ``calls`` frames, then to drop them."""
    made, dropped = [], []
    for _ in range(ROUNDS):
        frames = []
        start = time.perf_counter()
        for _ in range(calls):
            frames.append(make())
        middle = time.perf_counter()
        frames.clear()
        made.append((middle - start) / calls * 1e6)
        dropped.append((time.perf_counter() - middle) / calls * 1e6)
    return {"make_us": round(statistics.median(made), 2), "drop_us": round(statistics.median(dropped), 2)}


def lock_turns(make: Callable[[], Any], calls: int) -> int:
    """Turns another thread (one that only waits for the lock) got while ``calls`` frames were made and dropped."""
    turns, stop = [0], threading.Event()

    def other() -> None:
        while not stop.is_set():
            turns[0] += 1
            time.sleep(0)  # gives the lock up, then queues to take it back

    interval = sys.getswitchinterval()
    sys.setswitchinterval(10.0)  # no forced switches: only what gives the lock up lets the other thread run
    thread = threading.Thread(target=other, daemon=True)
    thread.start()
    try:
        time.sleep(0.05)
        before = turns[0]
        for _ in range(calls):
            make()
        return turns[0] - before
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        thread.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cuda (default) or cpu")
    parser.add_argument("--calls", type=int, default=300, help="frames a round (default 300)")
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error(f"--calls must be at least 1, got {args.calls}")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("probe_frame_lease: --device cuda needs a CUDA GPU, and torch sees none", file=sys.stderr)
        return 2
    results = {}
    for name, make in ways(args.device).items():
        results[name] = {**timed(make, args.calls), "lock_turns": lock_turns(make, args.calls * 5)}
    document = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "frame": list(SHAPE),
        "lock_turns_over_frames": args.calls * 5,
        "ways": results,
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
