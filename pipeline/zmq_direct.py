"""Non-blocking ZeroMQ sends that keep the interpreter lock: libzmq's ``zmq_send``, called through ctypes.

pyzmq gives up the interpreter lock around every send, even a non-blocking
one that only hands a few hundred bytes to libzmq's I/O thread (a couple of
microseconds). Taking the lock back is cheap on an idle process, but with
many cameras each capture thread takes the lock several times a frame, and the
publish thread then queues behind them after every message part. With 96 RTSP
cameras (2,300 frames/s) publishing took 1.07 ms a frame on a 2-core VM and
1.25 ms on a GPU box, and only 839 and 470 frames/s were published; with sends
that keep the lock, 0.10 ms and 1,588 frames/s on the VM
(``bench/bench_overhead.py --rtsp``). So the bus sends through the libzmq
that pyzmq itself loaded, on pyzmq's own socket handle, with ``ZMQ_DONTWAIT``:
the call never blocks, so holding the lock through it costs nothing.

Only a library already mapped into this process is used (the same instance
as pyzmq's, whose sockets these are); where none is found (a pyzmq that links
libzmq statically, a platform without ``/proc``), :func:`direct_sender` returns
``None`` and the bus sends through pyzmq as before.
"""

from __future__ import annotations

import ctypes
import errno as errnos
import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import zmq

log = logging.getLogger(__name__)

MAPS = Path("/proc/self/maps")
LATER_PART_RETRIES = 1000
LATER_PART_WAIT_S = 0.001
"""A message's later part refused (a full queue takes or refuses a message at its first part, so this is not
expected): how often, and how long apart, it is offered again before the send fails."""


class DirectSender:
    """``zmq_send`` of one libzmq, called without giving up the interpreter lock."""

    def __init__(self, path: str) -> None:
        lib = ctypes.PyDLL(path)  # PyDLL: the calls keep the interpreter lock
        self.path = path
        self._send = lib.zmq_send
        self._send.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        self._send.restype = ctypes.c_int
        self._errno = lib.zmq_errno
        self._errno.restype = ctypes.c_int
        major, minor, patch = (ctypes.c_int(), ctypes.c_int(), ctypes.c_int())
        lib.zmq_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
        self.version = (major.value, minor.value, patch.value)

    def send(self, handle: int, parts: Sequence[bytes]) -> bool:
        """Send ``parts`` as one message on the socket at ``handle``, never waiting; False when the socket's queue
        is full (the first part was refused, so nothing was sent). Other failures raise :class:`zmq.ZMQError`."""
        last = len(parts) - 1
        for i, part in enumerate(parts):
            flags = zmq.DONTWAIT | (zmq.SNDMORE if i < last else 0)
            refused = 0
            while self._send(handle, part, len(part), flags) < 0:
                errno = self._errno()
                if errno == zmq.EAGAIN and i == 0:
                    return False
                if errno == zmq.EAGAIN:  # a later part: libzmq queued the first, so it takes the rest (not seen)
                    refused += 1
                    if refused > LATER_PART_RETRIES:
                        raise zmq.ZMQError(errno)
                    time.sleep(LATER_PART_WAIT_S)
                elif errno != errnos.EINTR:
                    raise zmq.ZMQError(errno)
        return True


def mapped_libzmq(maps: Path = MAPS) -> str | None:
    """The path of the one libzmq mapped into this process (pyzmq's), or None when there is none or several."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return None
    fields = (line.split(maxsplit=5) for line in lines)  # address, perms, offset, device, inode, path
    paths = {f[5] for f in fields if len(f) == 6 and os.path.basename(f[5]).startswith("libzmq")}
    return paths.pop() if len(paths) == 1 else None


@functools.cache
def direct_sender() -> DirectSender | None:
    """The sender for pyzmq's own libzmq, or None (sends then go through pyzmq); found once per process."""
    path = mapped_libzmq()  # importing zmq loaded pyzmq's extension, and with it libzmq
    if path is None:
        log.debug("bus: pyzmq's libzmq is not a separate library here; sends go through pyzmq")
        return None
    try:
        sender = DirectSender(path)
    except (OSError, AttributeError) as exc:
        log.debug("bus: cannot call %s directly (%s); sends go through pyzmq", path, exc)
        return None
    if sender.version != zmq.zmq_version_info():
        log.debug(
            "bus: %s is libzmq %s, pyzmq uses %s; sends go through pyzmq", path, sender.version, zmq.zmq_version()
        )
        return None
    return sender
