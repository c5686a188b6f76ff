"""A real RTSP server on loopback for tests: GStreamer's gst-rtsp-server serving a live test pattern.

Run with the system Python that has PyGObject (``python3-gi``, ``gir1.2-gst-rtsp-server-1.0``)::

    /usr/bin/python3 tests/tools/rtsp_server.py PORT [--path /live] [--fps 15]
        [--user U --password P [--auth basic|digest]] [--ready-file F [--not-ready 503|404]]

Prints ``ready`` once it listens; serves H.264 until killed. With ``--user``, every request needs those
credentials (``401`` with a ``WWW-Authenticate`` challenge otherwise). With ``--ready-file``, the stream is only
there while that file exists, as a rebooting camera's: until then the server answers ``503`` (the path is mounted,
its media cannot be prepared; credentials are still checked first) or ``404`` (the path is not mounted yet).
"""

import argparse
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

ROLE = "camera-user"


class Factory(GstRtspServer.RTSPMediaFactory):
    """Builds the live pipeline, or (before ``ready_file`` exists) one that fails to prepare: a ``503``."""

    def __init__(self, launch: str, ready_file: str | None) -> None:
        super().__init__()
        self.launch, self.ready_file = launch, ready_file

    def do_create_element(self, url: GstRtsp.RTSPUrl) -> Gst.Element:
        if self.ready_file and not os.path.exists(self.ready_file):
            return Gst.parse_launch(f"( filesrc location={self.ready_file} ! h264parse ! rtph264pay name=pay0 pt=96 )")
        return Gst.parse_launch(self.launch)


def add_auth(server: GstRtspServer.RTSPServer, factory: Factory, args: argparse.Namespace) -> None:
    """Let only ``args.user`` with ``args.password`` reach the factory, by Basic or Digest authentication."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", ROLE)
    if args.auth == "digest":
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        auth.add_digest(args.user, args.password, token)
    else:
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role(ROLE, "media.factory.access", True)
    permissions.add_permission_for_role(ROLE, "media.factory.construct", True)
    factory.set_permissions(permissions)


def mount_when_ready(server: GstRtspServer.RTSPServer, path: str, factory: Factory, ready_file: str) -> None:
    """Mount ``factory`` once ``ready_file`` exists (until then the path is a ``404``)."""

    def check() -> bool:
        if not os.path.exists(ready_file):
            return True
        server.get_mount_points().add_factory(path, factory)
        return False

    GLib.timeout_add(50, check)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--path", default="/live")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--user")
    parser.add_argument("--password", default="")
    parser.add_argument("--auth", choices=["basic", "digest"], default="basic")
    parser.add_argument("--ready-file")
    parser.add_argument("--not-ready", type=int, choices=[503, 404], default=503)
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    launch = (
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate={args.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate=500 "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    delayed_mount = args.ready_file is not None and args.not_ready == 404
    factory = Factory(launch, None if delayed_mount else args.ready_file)
    factory.set_shared(True)
    if args.user:
        add_auth(server, factory, args)
    if delayed_mount:
        mount_when_ready(server, args.path, factory, args.ready_file)
    else:
        server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print("cannot listen", flush=True)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
