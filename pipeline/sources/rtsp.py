"""What an RTSP server answers to ``DESCRIBE``, asked with the credentials the capture uses.

When a capture fails to open, this probe tells a stream that is not there or
not for us (``401``, ``403``, ``404``) from one that is not ready yet. It
answers a ``401`` challenge as the capture does: with the user name and
password of the URL's userinfo (percent-decoded), by Digest (RFC 2617/7616,
MD5, ``qop=auth`` or none) or Basic authentication, on the same connection.
When it cannot tell (unreachable, no RTSP, a challenge it cannot answer, a
server that hangs up) it has no answer, and the failure is retried like an
unreachable camera's.
The probe sends :func:`without_userinfo` forms of a URL; messages name streams through :func:`pipeline.secrecy.redact`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
from typing import NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_PORT = 554
MAX_HEADER_BYTES = 16384
"""An answer's status line and headers larger than this are not read further."""
_PARAM = re.compile(r'([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


class Answer(NamedTuple):
    """An RTSP answer's status code and reason phrase, and the challenges of its ``WWW-Authenticate`` headers."""

    status: int
    reason: str
    challenges: tuple[str, ...] = ()


def without_userinfo(url: str) -> str:
    """``url`` without its ``user:password@`` part: the request URI the probe sends (credentials go in the
    ``Authorization`` header, answering the server's challenge, never in the URI)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def credentials(url: str) -> tuple[str, str] | None:
    """The user name and password of ``url``'s userinfo, percent-decoded; ``None`` when it has none."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


def describe(url: str, timeout_s: float) -> Answer | None:
    """The server's answer to ``DESCRIBE url`` (after answering its challenge with the URL's credentials);
    ``None`` when it is unreachable, does not speak RTSP, or asks for an authentication this probe cannot give."""
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError:
        return None
    if parts.scheme != "rtsp" or not host:
        return None
    uri, user = without_userinfo(url), credentials(url)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            answer = _exchange(conn, uri, 1, None)
            if answer is None or answer.status != 401 or user is None:
                return answer
            authorization = authorize(answer.challenges, *user, "DESCRIBE", uri)
            if authorization is None:
                return None
            return _exchange(conn, uri, 2, authorization)  # a server that closed after its challenge: no verdict
    except OSError:
        return None


def _exchange(conn: socket.socket, uri: str, cseq: int, authorization: str | None) -> Answer | None:
    """Send ``DESCRIBE uri`` and read the answer's status line and headers (the body is not needed); ``None`` when
    the server closes without a word or answers something other than RTSP."""
    request = f"DESCRIBE {uri} RTSP/1.0\r\nCSeq: {cseq}\r\nAccept: application/sdp\r\n"
    if authorization:
        request += f"Authorization: {authorization}\r\n"
    conn.sendall(f"{request}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head and len(head) < MAX_HEADER_BYTES:
        chunk = conn.recv(4096)
        if not chunk:
            break
        head += chunk
    return parse_answer(head.split(b"\r\n\r\n", 1)[0].decode("latin-1"))


def parse_answer(head: str) -> Answer | None:
    """The status and challenges of an answer's status line and headers; ``None`` if it is not RTSP."""
    lines = head.split("\r\n")
    fields = lines[0].split(None, 2)
    if len(fields) < 2 or not fields[0].startswith("RTSP/") or not fields[1].isdigit():
        return None
    reason = "".join(c for c in (fields[2] if len(fields) > 2 else "") if c.isprintable())[:60]
    challenges = tuple(
        value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
        if name.strip().lower() == "www-authenticate"
    )
    return Answer(int(fields[1]), reason, challenges)


def authorize(challenges: tuple[str, ...], user: str, password: str, method: str, uri: str) -> str | None:
    """The ``Authorization`` value that answers one of ``challenges`` (Digest with MD5 first, else Basic);
    ``None`` when none is of a kind this probe can answer."""
    parsed = [(scheme.lower(), params) for scheme, _, params in (c.partition(" ") for c in challenges)]
    for scheme, params in parsed:
        if scheme == "digest":
            authorization = _digest(dict(auth_params(params)), user, password, method, uri)
            if authorization is not None:
                return authorization
    if any(scheme == "basic" for scheme, _ in parsed):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return None


def auth_params(text: str) -> list[tuple[str, str]]:
    """A challenge's ``name=value`` parameters, lower-case names, quoted values unescaped."""
    return [
        (m.group(1).lower(), re.sub(r"\\(.)", r"\1", m.group(2)) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(text)
    ]


def _digest(challenge: dict[str, str], user: str, password: str, method: str, uri: str) -> str | None:
    """The answer to one Digest challenge; ``None`` for an algorithm other than MD5 or a ``qop`` without ``auth``."""
    algorithm = challenge.get("algorithm")
    if algorithm is not None and algorithm.upper() != "MD5":
        return None
    qops = [q.strip() for q in challenge["qop"].split(",")] if "qop" in challenge else None
    if qops is not None and "auth" not in qops:
        return None
    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    qop, nc, cnonce = ("auth", "00000001", secrets.token_hex(8)) if qops else (None, "", "")
    response = digest_response(user, password, realm, nonce, method, uri, qop=qop, nc=nc, cnonce=cnonce)
    fields = [("username", user), ("realm", realm), ("nonce", nonce), ("uri", uri), ("response", response)]
    if "opaque" in challenge:
        fields.append(("opaque", challenge["opaque"]))
    text = ", ".join(f'{name}="{_quoted(value)}"' for name, value in fields)
    if algorithm is not None:
        text += f", algorithm={algorithm}"
    if qop:
        text += f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
    return f"Digest {text}"


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def digest_response(
    user: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The ``response`` of Digest authentication with MD5 (RFC 2617 section 3.2.2.1), with ``qop=auth`` or none."""
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")
