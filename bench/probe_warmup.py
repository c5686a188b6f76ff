"""Where the GPU engine's warm-up goes: each batch size's first pass under cuDNN's modes, and their steady cost.

Start-up warms the engine up at batch 1, 2, 4 … 32 before any camera's frame waits on a first call; on a GPU
box most of that is the first eager pass of each new batch size. Each mode runs in a fresh process (some must be
chosen before torch loads), loads yolo11n (architecture only) fp16 with CUDA graphs, and times per batch size the
first two calls on 1080p frames (the graph's capture included), then the steady time of a batch:

- ``default``: as the engine runs;
- ``pre``: an eager pass of every batch size first, one after another (its time is ``pre_eager_s``);
- ``threads``: the same passes at once, one thread each;
- ``v7``: cuDNN's older API (``TORCH_CUDNN_V8_API_DISABLED=1``);
- ``nocudnn``: cuDNN off (torch's own convolutions).

::

    python bench/probe_warmup.py [--modes default,v7] [--out probe.json]

Needs a CUDA GPU. One JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MODES = ("default", "pre", "threads", "v7", "nocudnn")
SIZES = (1, 2, 4, 8, 16, 32)
STEADY_CALLS = 50


def probe(mode: str) -> dict[str, Any]:
    """One mode, in this process (torch not yet imported)."""
    t0 = time.monotonic()
    import numpy as np
    import torch

    from engines.base import ModelSpec
    from engines.detector import frame_size
    from engines.letterbox import geometry
    from engines.torch_backend import TorchRunner, load

    if mode == "nocudnn":
        torch.backends.cudnn.enabled = False
    det = load(ModelSpec("yolo11n.yaml", device="cuda", precision="fp16", streams=32, max_det=30))
    torch.cuda.synchronize()
    out: dict[str, Any] = {"mode": mode, "load_s": round(time.monotonic() - t0, 2)}
    out["cudnn"] = torch.backends.cudnn.version()
    blank = np.zeros((1080, 1920, 3), np.uint8)
    if mode in ("pre", "threads"):
        g = geometry(1080, 1920, 640, det._stride, det._auto)
        runner = det.runner
        assert isinstance(runner, TorchRunner)
        model = runner.model

        def eager(n: int) -> None:
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream), torch.inference_mode():
                model(torch.zeros(n, 3, g.out_h, g.out_w, dtype=torch.float16, device="cuda"))
            stream.synchronize()

        started = time.monotonic()
        if mode == "pre":
            for n in SIZES:
                eager(n)
        else:
            threads = [threading.Thread(target=eager, args=(n,)) for n in SIZES]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        out["pre_eager_s"] = round(time.monotonic() - started, 2)
    shape = frame_size(blank.shape)
    first: dict[int, float] = {}
    for n in SIZES:
        started = time.monotonic()
        for _ in range(2):
            det.infer([det.prepare(blank) for _ in range(n)], [shape] * n)
        torch.cuda.synchronize()
        first[n] = round(time.monotonic() - started, 3)
    out["first_calls_s"] = first
    out["first_calls_total_s"] = round(sum(first.values()), 2)
    steady: dict[int, float] = {}
    for n in SIZES:
        frames = [det.prepare(blank) for _ in range(n)]
        for _ in range(5):
            det.infer(frames, [shape] * n)
        started = time.monotonic()
        for _ in range(STEADY_CALLS):
            det.infer(frames, [shape] * n)
        steady[n] = round((time.monotonic() - started) / STEADY_CALLS * 1000, 3)
    out["steady_ms_per_batch"] = steady
    return out


def run_mode(mode: str) -> dict[str, Any]:
    env = dict(os.environ)
    if mode == "v7":
        env["TORCH_CUDNN_V8_API_DISABLED"] = "1"
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode], capture_output=True, text=True, env=env, timeout=300
    )
    if done.returncode != 0:
        return {"mode": mode, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(probe(args.child)))
        return
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        sys.exit(f"probe_warmup: --modes: unknown {', '.join(unknown)} (of {', '.join(MODES)})")
    import torch

    if not torch.cuda.is_available():
        sys.exit("probe_warmup: needs a CUDA GPU")
    machine = {"cpu": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__}
    machine["gpu"] = torch.cuda.get_device_name(0)
    document = {"machine": machine, "runs": [run_mode(m) for m in modes]}
    text = json.dumps(document, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
