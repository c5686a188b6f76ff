"""CurveZMQ keys for a subscriber: the publisher's public key, the subscriber's own pair, and key files.

Keys are pyzmq's certificate files (``zmq.auth.create_certificates``): ``NAME.key`` holds a public key
(share it), ``NAME.key_secret`` the pair (keep it). A publisher with CurveZMQ on admits only the subscribers
whose public key it lists; the others receive nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesight_client.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CurveClient:
    """A subscriber's side: the publisher's public key and the subscriber's own key pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_key: Path, client_secret_file: Path) -> CurveClient:
        server_public, _ = read_keys(server_key, need_secret=False)
        public, secret = read_keys(client_secret_file, need_secret=True)
        assert secret is not None
        return cls(server_public, public, secret)

    def apply(self, sock: Any) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def read_keys(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    """A key file's public key (and secret key, which ``need_secret`` requires)."""
    import zmq.auth

    if not path.is_file():
        raise ConfigError(f"key file not found: '{path}'")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"not a CurveZMQ key file: '{path}' ({exc})") from exc
    if need_secret and secret is None:
        raise ConfigError(f"'{path}' holds only a public key; give the .key_secret file")
    return public, secret


def generate(folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` into ``folder``; refuses to overwrite."""
    import zmq.auth

    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".key", ".key_secret"):
        if (folder / f"{name}{suffix}").exists():
            raise ConfigError(f"'{folder / (name + suffix)}' exists; remove it or pick another --name")
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)
