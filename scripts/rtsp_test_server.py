#!/usr/bin/python3 -I
"""A real RTSP server for the integration tests and `vigil soak` (GStreamer's GstRtspServer).

Run it with Debian's `/usr/bin/python3`, not the project's virtualenv: python3-gi is built for
Debian's Python; and with `-I`, so that the interpreter ignores the environment. A test helper,
it lives in `scripts/`, outside the installed package (a wheel does not carry it). It serves
`rtsp://127.0.0.1:PORT/PATH`, an H.264 stream of a moving ball (`videotestsrc pattern=ball`,
320x240 at 15 fps, a key frame every second so a client that (re)connects decodes within a
second), or, with `--file`, the given video decoded and re-encoded the same way at its own size
(played once, in real time, from the first client's connection; this GStreamer has no libav, so
use a codec it decodes: MJPG in AVI, H.264, VP8/VP9). The media is shared between clients.

Prints `READY <port>` on stdout once it listens; exits on SIGTERM or SIGINT. It is never
imported (python3-gi is not in the virtualenv): `vigil_tools.harness.RtspServer` runs it as a
child process.

    /usr/bin/python3 -I scripts/rtsp_test_server.py --port 8554 --path test [--file fight.mp4]
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODE = ("x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 "
          "! rtph264pay name=pay0 pt=96")


def launch_line(file, width, height, fps):
    """The media pipeline in gst-launch syntax (wrapped in parentheses, as the server wants)."""
    size = f",width={width},height={height}" if width and height else ""
    caps = f"video/x-raw{size},framerate={fps}/1"
    if file:
        location = file.replace("\\", "\\\\").replace('"', '\\"')
        src = (f'filesrc location="{location}" ! decodebin ! videoconvert ! videoscale '
               f"! videorate ! {caps},format=I420")
    else:
        caps = f"video/x-raw,width={width or 320},height={height or 240},framerate={fps}/1"
        src = f"videotestsrc is-live=true pattern=ball ! {caps}"
    return f"( {src} ! {ENCODE} )"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="test", help="mount point, without the leading slash")
    parser.add_argument("--file", default=None, help="serve this video instead of a test pattern")
    parser.add_argument("--width", type=int, default=None,
                        help="frame width (default: 320 for the test pattern, the file's own)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.file, args.width, args.height, args.fps))
    factory.set_shared(True)
    server.get_mount_points().add_factory("/" + args.path.lstrip("/"), factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
