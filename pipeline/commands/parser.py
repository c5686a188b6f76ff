"""The command line's parser: every subcommand, its options and their help."""

from __future__ import annotations

import argparse
import typing

from engines.registry import BACKENDS
from pipeline.config import (
    DEFAULT_ENDPOINT,
    DEFAULT_MODEL,
    ModelConfig,
)
from pipeline.faces.cli import add_faces_parser

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
DEMO_VIDEO = "edgesight-demo.mp4"
DEMO_MODEL = "edgesight-det"
"""The demo's model: bundled, so the demo runs offline."""
ENGINES = ["auto", *BACKENDS]
"""``--engine``'s choices: the registry's backends."""
PRECISIONS = list(typing.get_args(ModelConfig.model_fields["precision"].annotation))
DEVICES = list(typing.get_args(ModelConfig.model_fields["device"].annotation))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors, no live view")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="json: one JSON object per line")


def _add_run_overrides(p: argparse.ArgumentParser, default_model: str | None) -> None:
    p.add_argument(
        "--model",
        default=default_model,
        help="edgesight-det (bundled), an asset name (yolo11n.pt), local weights (.pt) or a .yaml architecture "
        f"(default {default_model or DEFAULT_MODEL})",
    )
    p.add_argument("--publish", metavar="ENDPOINT", help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT})")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop each stream after N frames")
    p.add_argument("--device", choices=DEVICES, help="inference device")
    p.add_argument("--engine", choices=ENGINES, help="inference backend (default auto: the fastest that loads)")
    p.add_argument("--precision", choices=PRECISIONS, help="auto: fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--imgsz", type=int, help="model input size (multiple of 32)")
    p.add_argument("--conf", type=float, help="confidence threshold")
    p.add_argument("--save", metavar="PATH", help="write the first stream's frames, annotated, to an MP4 file")
    p.add_argument(
        "--line",
        action="append",
        default=[],
        metavar="NAME=x1,y1,x2,y2",
        help="count crossings of a directed line (normalized 0-1 coordinates; repeatable; every stream)",
    )
    p.add_argument(
        "--zone",
        action="append",
        default=[],
        metavar="NAME=x1,y1,x2,y2,x3,y3[,...]",
        help="watch a polygon zone (normalized coordinates; repeatable; every stream)",
    )
    p.add_argument("--thumbnails", action="store_true", help="attach a JPEG of the object to new events")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve /metrics, /healthz and /readyz on PORT")
    p.add_argument("--preview-port", type=int, metavar="PORT", help="serve an annotated browser preview on PORT")
    p.add_argument(
        "--control", metavar="ENDPOINT", help="accept streams add/remove/list here (e.g. tcp://127.0.0.1:5557)"
    )
    p.add_argument("--status-file", metavar="FILE", help="write health and readiness as JSON to FILE every 5 s")
    p.add_argument(
        "--faces",
        metavar="DETECTOR",
        help="also detect faces with DETECTOR (mtcnn or a face .pt) at their own rate, on faces.<stream_id>",
    )
    p.add_argument("--recognize", action="store_true", help="recognize faces against the enrolled gallery")
    p.add_argument("--gallery", metavar="FILE", help="face gallery (default ~/.local/share/edgesight/faces.db)")
    p.add_argument("--face-weights", metavar="W", help="face embedder: a weights file, vggface2, seeded:N or .onnx")
    p.add_argument(
        "--wait-for-subscriber",
        action="store_true",
        help="hold messages until a subscriber connects, then never drop (for file replays)",
    )


def edgesight_version() -> str:
    """The installed distribution's version, else the package's own (a checkout used without installing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgesight")
    except PackageNotFoundError:
        from pipeline import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgesight", description="Real-time video analytics over ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"edgesight {edgesight_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline from a config file or --source/--model")
    run.add_argument("config", nargs="?", help="YAML config file")
    run.add_argument("--source", action="append", default=[], metavar="SRC", help="file, camera, URL or folder")
    _add_run_overrides(run, default_model=None)
    _add_common(run)

    check = sub.add_parser(
        "check", help="validate a config file, and that run could start with it here (files, models, ports), and exit"
    )
    check.add_argument("config", help="YAML config file")
    check.add_argument(
        "--schema-only",
        action="store_true",
        help="only the keys and values: not the files, models and ports of this machine (a config for another box)",
    )
    _add_common(check)

    subscribe = sub.add_parser("subscribe", help="print messages from a running pipeline")
    subscribe.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    subscribe.add_argument("--topic", action="append", default=[], metavar="PREFIX", help="topic prefix (repeatable)")
    subscribe.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    subscribe.add_argument("--timeout", type=float, metavar="S", help="exit with code 1 if nothing arrives for S s")
    subscribe.add_argument("--json", action="store_true", help="print each message body as one JSON line")
    subscribe.add_argument("--server-key", metavar="FILE", help="CurveZMQ: the publisher's public .key file")
    subscribe.add_argument("--client-key", metavar="FILE", help="CurveZMQ: this subscriber's .key_secret file")
    _add_common(subscribe)

    streams = sub.add_parser("streams", help="list, add and remove streams of a running pipeline")
    stream_verbs = streams.add_subparsers(dest="streams_command", required=True, metavar="ACTION")
    listing = stream_verbs.add_parser("list", help="the running streams")
    adding = stream_verbs.add_parser("add", help="start a stream")
    adding.add_argument("--id", required=True)
    adding.add_argument("--source", required=True, metavar="SRC", help="as run --source")
    removing = stream_verbs.add_parser("remove", help="end a stream")
    removing.add_argument("id")
    for p in (listing, adding, removing):
        p.add_argument("--control", default="tcp://127.0.0.1:5557", metavar="ENDPOINT", help="control.endpoint")
        p.add_argument("--timeout", type=float, default=15.0, metavar="S", help="wait this long for an answer")
        p.add_argument("--server-key", metavar="FILE", help="CurveZMQ: the pipeline's public .key file")
        p.add_argument("--client-key", metavar="FILE", help="CurveZMQ: this client's .key_secret file")
        _add_common(p)

    aggregate = sub.add_parser("aggregate", help="fan the buses of many boxes into one (XSUB/XPUB proxy)")
    aggregate.add_argument(
        "--from",
        dest="upstream",
        action="append",
        default=[],
        metavar="ENDPOINT",
        help="a box's bus, e.g. tcp://box1:5555 (repeatable)",
    )
    aggregate.add_argument("--bind", default="tcp://127.0.0.1:5560", metavar="ENDPOINT")
    aggregate.add_argument("--server-key", metavar="FILE", help="CurveZMQ: the boxes' public .key")
    aggregate.add_argument("--client-key", metavar="FILE", help="CurveZMQ: this aggregator's .key_secret")
    aggregate.add_argument("--secret-key", metavar="FILE", help="CurveZMQ: the aggregator's own .key_secret")
    aggregate.add_argument("--clients", metavar="DIR", help="CurveZMQ: allowed subscribers' public keys")
    _add_common(aggregate)

    check_health = sub.add_parser("health", help="exit 0 if a running pipeline's status file says it is healthy")
    check_health.add_argument("--status-file", required=True, metavar="FILE")
    check_health.add_argument("--max-age", type=float, default=15.0, metavar="S", help="oldest acceptable write")
    _add_common(check_health)

    keys = sub.add_parser("keys", help="CurveZMQ key pairs for an encrypted, authenticated bus")
    key_verbs = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = key_verbs.add_parser("generate", help="write NAME.key (public) and NAME.key_secret")
    generate.add_argument("--out", required=True, metavar="DIR")
    generate.add_argument("--name", default="server", help="file name stem (default server)")
    _add_common(generate)

    synth = sub.add_parser("synth", help="write a generated street scene (scene.mp4) and its truth (truth.jsonl)")
    synth.add_argument("--seed", type=int, required=True)
    synth.add_argument("--frames", type=int, required=True)
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--size", default="640x360", metavar="WxH")
    synth.add_argument("--fps", type=float, default=30.0)
    synth.add_argument("--no-occlusion", action="store_true", help="only objects that never overlap (a simple scene)")
    _add_common(synth)

    build = sub.add_parser(
        "build-engine", help="build (or find) the cached TensorRT engine for a model, for a fast first boot"
    )
    build.add_argument("model", help="weights (.pt), a bundled name (edgesight-det) or an asset name")
    build.add_argument("--precision", choices=["fp16", "fp32", "int8"], default="fp16")
    build.add_argument("--batch", type=int, default=1, metavar="N", help="largest batch (streams batched together)")
    build.add_argument("--imgsz", type=int, default=640, metavar="S", help="input size (multiple of 32)")
    build.add_argument("--calibration", metavar="PATH", help="int8: a folder of images or a video to calibrate on")
    build.add_argument("--calibration-frames", type=int, default=256, metavar="N")
    build.add_argument("--cache-dir", metavar="DIR", help="engine cache (default ~/.cache/edgesight/engines)")
    build.add_argument("--workspace-gb", type=float, default=4.0)
    _add_common(build)

    add_faces_parser(sub)

    demo = sub.add_parser("demo", help="run a generated scene through a model (no camera, no internet)")
    demo.add_argument("--frames", type=int, default=150, help="length of the generated scene")
    demo.add_argument("--seed", type=int, default=7)
    _add_run_overrides(demo, default_model=DEMO_MODEL)
    demo.set_defaults(save=DEMO_VIDEO)
    demo.add_argument("--no-save", dest="save", action="store_const", const=None, help="do not write a video")
    _add_common(demo)
    return parser
