"""Messages off a ``multiprocessing`` pipe, read with as few system calls (each gives the interpreter lock up) as
there are.

A capture thread of a decoding group reads its session's frames from a pipe.
:class:`~multiprocessing.connection.Connection` gives the interpreter lock up
three times a message (a poll and two reads), and with a hundred capture
threads each give-up waits its turn to take the lock back: a camera's thread
then spends most of a frame interval queueing for the lock. A
:class:`PipeReader` reads whatever has arrived in one non-blocking call and
keeps what it has not handed on yet, so a thread behind its camera takes its
next message without a system call, and one that is waiting polls once.

The framing is ``Connection``'s (a 4-byte big-endian length; ``-1`` and an
8-byte length for a message of 2 GiB or more), so the other end sends with
``send_bytes`` or ``send`` as before.
"""

from __future__ import annotations

import os
import select
import socket
import struct

_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")
CHUNK = 1 << 16
"""Bytes asked for in one read."""


class PipeReader:
    """The receiving side of a duplex ``Connection`` (a socket pair; its descriptor duplicated, so this and the
    connection are closed apart)."""

    def __init__(self, fileno: int) -> None:
        self._sock = socket.socket(fileno=os.dup(fileno))
        self._buffer = bytearray()
        self._poller = select.poll()
        self._poller.register(self._sock.fileno(), select.POLLIN)

    def take(self) -> bytes | None:
        """The next whole message, if it has arrived (one non-blocking read at most); ``None`` if not yet.
        Raises :class:`EOFError` once the other end has closed and every message is taken."""
        message = self._split()
        if message is not None:
            return message
        try:
            data = self._sock.recv(CHUNK, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        if not data:
            raise EOFError("the pipe's other end closed")
        self._buffer += data
        return self._split()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for more to read; ``True`` when there is (or the other end closed)."""
        return bool(self._poller.poll(timeout_s * 1000.0))

    def close(self) -> None:
        self._sock.close()
        self._buffer.clear()

    def _split(self) -> bytes | None:
        """The first whole message in the buffer, taken out of it."""
        buffer = self._buffer
        if len(buffer) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack_from(buffer)
        start = _LENGTH.size
        if size == -1:
            if len(buffer) < start + _LONG_LENGTH.size:
                return None
            (size,) = _LONG_LENGTH.unpack_from(buffer, start)
            start += _LONG_LENGTH.size
        end = start + size
        if len(buffer) < end:
            return None
        message = bytes(buffer[start:end])
        del buffer[:end]
        return message
