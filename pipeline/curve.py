"""CurveZMQ for the bus: the publisher's key pair, the subscribers it lets in, and key files.

The subscriber's side (:class:`CurveClient`, reading and generating key files) lives in the light bus client,
:mod:`edgesight_client.curve`, and is re-exported here.

Keys are pyzmq's certificate files (``zmq.auth.create_certificates``): ``NAME.key`` holds a public key
(share it), ``NAME.key_secret`` the pair (keep it). The publisher reads its ``.key_secret``; each allowed
subscriber's ``.key`` goes into one folder. Messages are then encrypted, and a subscriber whose public key is
not in the folder is refused during the handshake: it receives nothing, and the refusal is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesight_client.curve import CurveClient, generate, read_keys
from pipeline.errors import ConfigError

__all__ = ["CurveClient", "CurveServer", "ServerContext", "generate", "read_keys"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CurveServer:
    """The publisher's side: its key pair and the folder of allowed subscribers' public keys."""

    public: bytes
    secret: bytes
    clients: Path

    @classmethod
    def load(cls, secret_file: Path, clients: Path) -> CurveServer:
        public, secret = read_keys(secret_file, need_secret=True)
        if not clients.is_dir():
            raise ConfigError(f"publish.curve.clients: not a folder of public keys: '{clients}'")
        if not list(clients.glob("*.key")):
            log.warning("publish.curve.clients '%s' holds no .key file: every subscriber will be refused", clients)
        assert secret is not None
        return cls(public, secret, clients)


class _RefusalLog:
    """The authenticator's logger: refusals become warnings, everything else stays at debug."""

    def __init__(self, target: logging.Logger) -> None:
        self._log = target

    def debug(self, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        if text.startswith("DENIED"):
            self._log.warning("refused a subscriber: %s", text)
        else:
            self._log.debug("%s", text)

    def info(self, msg: str, *args: Any) -> None:
        self._log.info(msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._log.warning(msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self._log.error(msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        self._log.exception(msg, *args)


class ServerContext:
    """A ZeroMQ context for sockets that others connect to: with ``curve``, its ZAP authenticator admits only the
    allowed public keys, and every socket from :meth:`socket` encrypts; without, sockets are plain."""

    def __init__(self, curve: CurveServer | None = None) -> None:
        import zmq

        self.zmq = zmq.Context()
        self.curve = curve
        self._auth: Any = None
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self.zmq, log=_RefusalLog(log))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(curve.clients))

    def socket(self, kind: int, server: bool = True) -> Any:
        """A socket with no linger; a server one (``server``) is a CurveZMQ server when the context has keys."""
        import zmq

        sock = self.zmq.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if server and self.curve is not None:
            sock.curve_secretkey = self.curve.secret
            sock.curve_publickey = self.curve.public
            sock.curve_server = True
        return sock

    def term(self) -> None:
        """Stop the authenticator and end the context (close the sockets first)."""
        if self._auth is not None:
            self._auth.stop()
        self.zmq.term()
