"""Which image references a source may use, and reading an http(s) image safely.

The policy, ``resolve_reference(ref, root, spec)``, returns where to read or raises
``ImageRejected`` with the reason:

- a relative path is read under the source root and never outside it: ``..`` and absolute
  paths are refused, and a local path is resolved (symlinks included) and confined; under
  an object-store root (``s3://bucket/prefix``) the path is read with the source's own
  storage (it is the source's data), under an http(s) root with ``fetch_url``;
- a reference with a scheme may only be ``http://`` or ``https://``, and only when the
  source sets ``remote_images: true``; ``file://``, ``s3://``, ``gs://``, ``hf://``,
  chained protocols (``simplecache::file://...``) and any other scheme are refused: a
  record never chooses the storage, or the credentials, its image is read with.

``fetch_url`` reads one URL: every hop's host is resolved and each of its addresses must be
public (loopback, private, link-local, multicast, reserved, unspecified, shared and cloud
metadata addresses are refused), the connection goes to the address that was checked (no
second lookup), redirects are followed here, at most ``MAX_REDIRECTS`` hops, each checked
the same way, the body is read in chunks and dropped once it passes the byte cap (a
``Content-Length`` over the cap is refused before reading), and connect, read and total
deadlines bound the time. Only a ``200`` answer is an image.

``ALLOW_PRIVATE_HOSTS`` is the one escape hatch, for tests that serve images from
127.0.0.1: no configuration fills it (a sources file cannot: ``SourceSpec`` forbids
unknown keys).

The module is a little over 300 lines on purpose: the whole reference policy, the part a
security review reads, stays in one file.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

from charassets.domain.images.decode import ImageRejected, confine
from charassets.domain.sources import SourceSpec

MAX_IMAGE_BYTES = 64 * 2**20
CONNECT_TIMEOUT = 5.0  # seconds, per address tried
READ_TIMEOUT = 15.0  # seconds without a byte
DEADLINE = 30.0  # seconds for the whole fetch, redirects included
MAX_REDIRECTS = 3
READ_CHUNK = 256 * 2**10
REMOTE_SCHEMES = ("http", "https")
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
# Tests only: hosts (lower case, as written in the URL) allowed to resolve to non-public addresses.
ALLOW_PRIVATE_HOSTS: set[str] = set()

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_IPV6_LITERAL = re.compile(r"(?<=://)([^/?#@]*@)?\[[0-9A-Fa-f:.]+(%[^\]]*)?\]")


@dataclass(frozen=True)
class LocalPath:
    """A file under a local source root (resolved, symlinks included, inside the root)."""

    path: Path


@dataclass(frozen=True)
class SourcePath:
    """A file under an object-store source root, read with the source's own storage."""

    url: str


@dataclass(frozen=True)
class RemoteURL:
    """An http(s) image, read with ``fetch_url`` (its host is checked at each hop)."""

    url: str


def scheme_of(ref: str) -> str | None:
    """The lower-case scheme of ``scheme://...``, or None for a plain path."""
    m = _SCHEME.match(ref)
    return m.group(1).lower() if m else None


def is_remote(ref: str, root: str) -> bool:
    """Whether ``ref`` under ``root`` is read over http(s) (and so fetched with ``fetch_url``)."""
    return (scheme_of(ref) or scheme_of(root)) in REMOTE_SCHEMES


def resolve_reference(ref: str, root: str, spec: SourceSpec) -> LocalPath | SourcePath | RemoteURL:
    """Where the image ``ref`` of a record of ``spec`` (under ``root``) may be read; ``ImageRejected`` says why not."""
    if not ref or "\x00" in ref:
        raise ImageRejected("reference refused: empty or contains a NUL byte")
    if "::" in _IPV6_LITERAL.sub("", ref):  # fsspec's chaining separator (an IPv6 host in brackets is no chain)
        raise ImageRejected(f"reference refused: chained protocols (::) are not allowed: {ref}")
    scheme = scheme_of(ref)
    if scheme is not None:
        if scheme not in REMOTE_SCHEMES:
            raise ImageRejected(
                f"reference refused: scheme {scheme}:// is not allowed (only http and https, for sources with remote_images): {ref}"
            )
        if not spec.remote_images:
            raise ImageRejected(f"reference refused: remote images are off for source {spec.name!r} (remote_images: false): {ref}")
        check_url(ref)
        return RemoteURL(ref)
    parts = PurePosixPath(ref).parts
    if PurePosixPath(ref).is_absolute():
        raise ImageRejected(f"reference refused: absolute path escapes the source root: {ref}")
    if ".." in parts:
        raise ImageRejected(f"reference refused: path escapes the source root: {ref}")
    root_scheme = scheme_of(root)
    if root_scheme is None or root_scheme in ("file", "local"):
        local_root = root if root_scheme is None else urlsplit(root).path
        return LocalPath(confine(local_root, ref))
    url = f"{root.rstrip('/')}/{ref}"
    if root_scheme in REMOTE_SCHEMES:  # a table served over http(s): its relative images come from the same place
        check_url(url)
        return RemoteURL(url)
    return SourcePath(url)


def check_url(url: str) -> None:
    """What can be checked of an http(s) URL without resolving it: scheme, no credentials, a host, a literal address."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as e:
        raise ImageRejected(f"reference refused: malformed URL ({e}): {url}") from None
    if parts.scheme.lower() not in REMOTE_SCHEMES:
        raise ImageRejected(f"reference refused: scheme {parts.scheme}:// is not allowed (only http and https): {url}")
    if not parts.hostname:
        raise ImageRejected(f"reference refused: no host in URL: {url}")
    if parts.username is not None or parts.password is not None:
        raise ImageRejected(f"reference refused: credentials in URL: {url}")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return  # a name: checked when it is resolved, at each hop
    if parts.hostname.lower() not in ALLOW_PRIVATE_HOSTS and _blocked(address):
        raise ImageRejected(f"reference refused: {parts.hostname} is not a public address ({_kind(address)}): {url}")


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip.version == 6:  # an IPv4 address inside an IPv6 one is judged as itself
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None and _blocked(inner):
            return True
    return (
        ip in METADATA_ADDRESSES
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global  # shared (100.64/10), documentation, benchmarking... ranges
    )


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if ip.version == 6 and (inner := ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)) and _blocked(inner):
        return _kind(inner)
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    for name in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    return "not global"


def public_addresses(host: str, port: int) -> list[tuple[int, tuple]]:
    """``(family, sockaddr)`` of each address of ``host``; ``ImageRejected`` if any is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as e:
        raise OSError(f"cannot resolve {host}: {e}") from None
    out = []
    for family, _, _, _, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if host.lower() not in ALLOW_PRIVATE_HOSTS and _blocked(ip):
            raise ImageRejected(f"reference refused: {host} resolves to {ip}, not a public address ({_kind(ip)})")
        out.append((family, sockaddr))
    if not out:
        raise OSError(f"cannot resolve {host}: no address")
    return out


def _connect(addresses: list[tuple[int, tuple]], timeout: float) -> socket.socket:
    error: OSError = OSError("no address to connect to")
    for family, sockaddr in addresses[:4]:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to an address checked beforehand (the host name is only sent in ``Host``)."""

    def __init__(self, host: str, port: int, addresses: list, connect_timeout: float, read_timeout: float):
        super().__init__(host, port, timeout=read_timeout)
        self._addresses, self._connect_timeout = addresses, connect_timeout

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self._connect_timeout)
        self.sock.settimeout(self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand; the certificate is verified for the host name."""

    def __init__(self, host: str, port: int, addresses: list, connect_timeout: float, read_timeout: float):
        super().__init__(host, port, timeout=read_timeout)
        self._addresses, self._connect_timeout = addresses, connect_timeout

    def connect(self) -> None:
        sock = _connect(self._addresses, self._connect_timeout)
        sock.settimeout(self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch_url(
    url: str,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    deadline: float = DEADLINE,
    max_redirects: int = MAX_REDIRECTS,
) -> bytes:
    """The body of a ``200`` answer to ``GET url``, within the cap and the deadlines.

    ``ImageRejected`` for what the policy refuses (a host that is not public, a scheme, too
    many redirects, a body over ``max_bytes``, the deadline passed); ``FileNotFoundError``
    for 404/410 and ``OSError`` for other network failures and answers.
    """
    start = time.monotonic()
    live: list[http.client.HTTPConnection] = []
    expired = threading.Event()

    def abort() -> None:  # the total deadline: unblock whatever read is waiting
        expired.set()
        for conn in live:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def timed_out() -> ImageRejected:
        return ImageRejected(f"cannot read {url}: no complete answer within the {deadline:g} s deadline")

    watchdog = threading.Timer(deadline, abort)
    watchdog.daemon = True
    watchdog.start()
    try:
        for _ in range(max_redirects + 1):
            check_url(url)
            parts = urlsplit(url)
            secure = parts.scheme.lower() == "https"
            port = parts.port or (443 if secure else 80)
            addresses = public_addresses(parts.hostname, port)
            remaining = deadline - (time.monotonic() - start)
            if remaining <= 0 or expired.is_set():
                raise timed_out()
            kind = _PinnedHTTPS if secure else _PinnedHTTP
            conn = kind(parts.hostname, port, addresses, min(connect_timeout, remaining), min(read_timeout, remaining))
            live[:] = [conn]
            try:
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                conn.request("GET", target, headers={"User-Agent": "charassets", "Accept": "image/*", "Accept-Encoding": "identity"})
                resp = conn.getresponse()
                if resp.status in (301, 302, 303, 307, 308):
                    location = resp.getheader("Location")
                    if not location:
                        raise OSError(f"HTTP {resp.status} without a Location: {url}")
                    url = urljoin(url, location.strip())
                    continue
                if resp.status in (404, 410):
                    raise FileNotFoundError(f"HTTP {resp.status}: {url}")
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status} {resp.reason}: {url}")
                declared = resp.getheader("Content-Length")
                if declared and declared.strip().isdigit() and int(declared) > max_bytes:
                    raise ImageRejected(f"file larger than {max_bytes:,} bytes (Content-Length {int(declared):,}): {url}")
                return _read_capped(resp, conn, url, max_bytes, read_timeout, start, deadline, expired, timed_out)
            except (OSError, http.client.HTTPException) as e:
                if expired.is_set():
                    raise timed_out() from None
                if isinstance(e, OSError):
                    raise
                raise OSError(f"{type(e).__name__}: {e}") from None
            finally:
                conn.close()
        raise ImageRejected(f"reference refused: more than {max_redirects} redirects: {url}")
    finally:
        watchdog.cancel()


def _read_capped(resp, conn, url, max_bytes, read_timeout, start, deadline, expired, timed_out) -> bytes:
    """The body, a chunk at a time: stops as soon as it passes ``max_bytes`` or the deadline."""
    chunks, total = [], 0
    while True:
        remaining = deadline - (time.monotonic() - start)
        if remaining <= 0 or expired.is_set():
            raise timed_out()
        if conn.sock is not None:
            conn.sock.settimeout(min(read_timeout, remaining))
        piece = resp.read1(READ_CHUNK)
        if not piece:
            break
        total += len(piece)
        if total > max_bytes:
            raise ImageRejected(f"file larger than {max_bytes:,} bytes (stopped reading): {url}")
        chunks.append(piece)
    if expired.is_set():
        raise timed_out()
    if resp.length:  # the server closed before the declared length
        raise OSError(f"incomplete body ({total:,} bytes, {resp.length:,} missing): {url}")
    return b"".join(chunks)
