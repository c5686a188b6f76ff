"""``edgesight faces enroll|list|remove``: the face gallery from the command line."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError


def add_faces_parser(sub: Any) -> argparse.ArgumentParser:
    faces = sub.add_parser("faces", help="the face gallery: enroll, list and remove people")
    verbs = faces.add_subparsers(dest="faces_command", required=True, metavar="ACTION")
    enroll = verbs.add_parser("enroll", help="add photos of a person (the largest face of each)")
    enroll.add_argument("--name", required=True)
    enroll.add_argument("images", nargs="+", metavar="IMAGE")
    enroll.add_argument("--weights", default="vggface2", help="embedder, as faces.weights (must match the runs)")
    enroll.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    listing = verbs.add_parser("list", help="enrolled people")
    remove = verbs.add_parser("remove", help="forget a person")
    remove.add_argument("name")
    for p in (enroll, listing, remove):
        p.add_argument("--gallery", metavar="FILE", help="SQLite gallery (default ~/.local/share/edgesight/faces.db)")
        p.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
        p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return faces


def cmd_faces(args: argparse.Namespace) -> int:
    from pipeline.faces.gallery import FaceGallery, gallery_path

    path = gallery_path(args.gallery)
    if args.faces_command != "enroll" and not path.is_file():
        raise ConfigError(f"face gallery not found: '{path}' (enroll someone first)")
    gallery = FaceGallery(path)
    try:
        if args.faces_command == "enroll":
            from engines.torch_backend import select_device
            from pipeline.faces.embedder import load_embedder
            from pipeline.faces.enroll import enroll

            device = str(select_device(args.device))
            embedder = load_embedder(args.weights, device)
            count = enroll(gallery, args.name, [Path(p) for p in args.images], embedder, device)
            print(f"enrolled {count} face(s) of '{args.name}' in {path} ({embedder.name})")
        elif args.faces_command == "list":
            people = gallery.people()
            for person in people:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(person.enrolled_at))
                print(f"{person.name}\t{person.embeddings} face(s)\tenrolled {when}")
            if not people:
                print(f"nobody is enrolled in {path}")
        elif not gallery.remove(args.name):
            raise ConfigError(f"nobody named '{args.name}' in {path}")
        else:
            print(f"removed '{args.name}' from {path}")
    finally:
        gallery.close()
    return 0
