"""Image references: what a record may point at (the policy), and how a URL is read (caps, timeouts, redirects, once per run).

Servers here listen on 127.0.0.1; the policy refuses loopback, so the tests that need to
reach them put exactly that host in ``image_fetch.ALLOW_PRIVATE_HOSTS`` (the escape hatch
no configuration can set).
"""

from __future__ import annotations

import collections
import http.server
import io
import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from PIL import Image

from charassets.domain.images import stage as image_stage
from charassets.domain.images.decode import ImageRejected
from charassets.domain.sources import Chunk, SourceSpec, read_chunk, register
from charassets_tests.conftest import shared_file

ROOT = Path(__file__).resolve().parents[1]


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


PICTURE = _png(Image.new("RGB", (40, 30), (200, 30, 30)))


class Server:
    """A local HTTP server whose routes are functions of the handler; counts the requests per path."""

    def __init__(self, routes: dict):
        self.hits: collections.Counter = collections.Counter()
        self.done = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):  # noqa: N802
                server.hits[self.path] += 1
                route = routes.get(self.path)
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        route(self)
                except OSError:  # the client hung up: what the cap and the deadline are for
                    pass
                finally:
                    server.done.set()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(routes: dict) -> Server:
        servers.append(Server(routes))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def body(data: bytes, status: int = 200, content_type: str = "image/png"):
    def route(h):
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return route


def redirect(location: str):
    def route(h):
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def _policy():
    """The policy module, imported by the tests that use it (the others also run, and fail, on code without it)."""
    from charassets.domain.images import fetch as image_fetch

    return image_fetch


@pytest.fixture
def allow_local(monkeypatch):
    """The escape hatch, for these tests only: 127.0.0.1 (and nothing else) may be fetched."""
    monkeypatch.setattr(_policy(), "ALLOW_PRIVATE_HOSTS", {"127.0.0.1"})


def _stage(tmp_path: Path, refs: list[str], **spec_fields) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``images_stage`` over a one-chunk Parquet source whose image column holds ``refs``."""
    folder = tmp_path / "table"
    folder.mkdir(exist_ok=True)
    pl.DataFrame({"id": [f"r{i}" for i in range(len(refs))], "tags": ["1girl"] * len(refs), "image": refs}).write_parquet(
        folder / "rows.parquet"
    )
    spec = SourceSpec(
        name="t", uri=str(folder / "rows.parquet"), columns={"id": "id", "tags": "tags", "image": "image"}, images=True, **spec_fields
    )
    chunk = Chunk.from_row(register(spec).row(0, named=True))
    records, _ = read_chunk(chunk, spec)
    return image_stage.images_stage(records, chunk, spec)


def _reasons(rejects: pl.DataFrame) -> dict[str, str]:
    return dict(rejects.select("image_ref", "reason").iter_rows())


def test_file_urls_and_absolute_paths_are_refused(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(PICTURE)
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "inside.png").write_bytes(PICTURE)
    refs = [f"file://{secret}", str(secret), "../secret.png", "inside.png"]
    images, rejects = _stage(tmp_path, refs)
    assert images.get_column("image_ref").to_list() == ["inside.png"]  # a path under the root still works
    reasons = _reasons(rejects)
    assert "scheme file:// is not allowed" in reasons[f"file://{secret}"]
    assert "absolute path" in reasons[str(secret)]
    assert "escapes the source root" in reasons["../secret.png"]


def test_chained_protocols_are_refused(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(PICTURE)
    refs = [f"simplecache::file://{secret}", f"blockcache::file://{secret}", f"zip://x.png::file://{tmp_path}/a.zip"]
    images, rejects = _stage(tmp_path, refs)
    assert images.height == 0
    assert all("chained protocols" in r for r in _reasons(rejects).values()), _reasons(rejects)


def test_object_store_and_other_schemes_are_refused(tmp_path):
    refs = ["s3://bucket/secret.png", "gs://bucket/secret.png", "hf://datasets/x/y/secret.png", "memory://secret.png", "ftp://h/x.png"]
    images, rejects = _stage(tmp_path, refs, remote_images=True)  # even with remote images on: only http(s)
    assert images.height == 0
    reasons = _reasons(rejects)
    for ref in refs:
        assert f"scheme {ref.split('://')[0]}:// is not allowed" in reasons[ref]


def test_relative_paths_under_an_object_store_root_use_the_source_storage():
    spec = SourceSpec(name="t", uri="s3://bucket/prefix/rows.parquet", columns={"id": "id", "image": "image"}, images=True)
    assert _policy().resolve_reference("a/b.png", "s3://bucket/prefix", spec) == _policy().SourcePath("s3://bucket/prefix/a/b.png")
    for bad in ("../other/b.png", "/b.png", "a/../../b.png"):
        with pytest.raises(ImageRejected, match="escapes the source root"):
            _policy().resolve_reference(bad, "s3://bucket/prefix", spec)
    with pytest.raises(ImageRejected, match="chained"):
        _policy().resolve_reference("a.png::s3://other/b.png", "s3://bucket/prefix", spec)


def test_http_is_refused_unless_the_source_enables_remote_images(tmp_path, serve, monkeypatch):
    server = serve({"/a.png": body(PICTURE)})
    images, rejects = _stage(tmp_path, [f"{server.url}/a.png"])
    assert images.height == 0 and "remote_images: false" in rejects.get_column("reason")[0]
    assert server.hits["/a.png"] == 0  # not even a request
    monkeypatch.setattr(_policy(), "ALLOW_PRIVATE_HOSTS", {"127.0.0.1"})
    images, _ = _stage(tmp_path, [f"{server.url}/a.png"], remote_images=True)
    assert images.height == 1 and server.hits["/a.png"] == 1


def test_loopback_private_and_metadata_hosts_are_refused(tmp_path, serve, monkeypatch):
    server = serve({"/a.png": body(PICTURE)})
    port = server.port
    refs = [
        f"http://127.0.0.1:{port}/a.png",
        f"http://localhost:{port}/a.png",  # a name: refused once resolved
        f"http://[::1]:{port}/a.png",
        f"http://0.0.0.0:{port}/a.png",
        "http://10.1.2.3/a.png",
        "http://192.168.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://224.0.0.1/a.png",
    ]
    images, rejects = _stage(tmp_path, refs, remote_images=True)
    assert images.height == 0
    reasons = _reasons(rejects)
    assert all("not a public address" in reasons[r] for r in refs), reasons
    assert "cloud metadata" in reasons["http://169.254.169.254/latest/meta-data/"]
    assert server.hits["/a.png"] == 0
    # a public-looking name that resolves to a private address is refused before any connection
    fake = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 80)),
    ]
    monkeypatch.setattr(_policy().socket, "getaddrinfo", lambda *a, **k: fake)
    with pytest.raises(ImageRejected, match=r"images\.example\.com resolves to 10\.0\.0\.7"):
        _policy().fetch_url("http://images.example.com/a.png")


def test_a_redirect_to_a_private_host_is_refused(tmp_path, serve, allow_local):  # the first hop's host only
    routes: dict = {}
    server = serve(routes)  # routes are looked up at request time
    routes.update(
        {
            "/start": redirect(f"http://localhost:{server.port}/secret.png"),  # the same server, by a name that is not allowed
            "/secret.png": body(PICTURE),
            "/hop": redirect("/a.png"),
            "/a.png": body(PICTURE),
            "/loop": redirect("/loop"),
        }
    )
    images, rejects = _stage(tmp_path, [f"{server.url}/start", f"{server.url}/hop", f"{server.url}/loop"], remote_images=True)
    reasons = _reasons(rejects)
    assert "localhost resolves to" in reasons[f"{server.url}/start"] and "not a public address" in reasons[f"{server.url}/start"]
    assert server.hits["/start"] == 1 and server.hits["/secret.png"] == 0  # the redirect was checked, not followed
    assert images.get_column("image_ref").to_list() == [f"{server.url}/hop"]  # an allowed redirect is followed
    assert "more than 3 redirects" in reasons[f"{server.url}/loop"] and server.hits["/loop"] == 4


def test_an_oversize_body_is_refused_without_reading_it_all(serve, allow_local):
    sent = collections.Counter()

    def endless(h):  # no Content-Length: the body only ends when the client stops reading
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        block = b"\0" * 2**20
        for _ in range(400):
            h.wfile.write(block)
            sent["bytes"] += len(block)

    def declared(h):  # a 400 MB body announced up front
        h.send_response(200)
        h.send_header("Content-Length", str(400 * 2**20))
        h.end_headers()
        h.wfile.write(b"\0" * 2**20)

    def partial(h):  # 206 for a request that asked for no range
        body(b"\0" * 2**16, status=206)(h)

    server = serve({"/endless": endless, "/declared": declared, "/partial": partial})
    cap = 4 * 2**20
    with pytest.raises(ImageRejected, match="larger than 4,194,304 bytes"):
        _policy().fetch_url(f"{server.url}/endless", max_bytes=cap)
    assert server.done.wait(10)
    assert sent["bytes"] < 40 * 2**20  # the server could push little more than the cap (plus socket buffers) before we hung up
    with pytest.raises(ImageRejected, match=r"Content-Length 419,430,400"):
        _policy().fetch_url(f"{server.url}/declared", max_bytes=cap)
    with pytest.raises(OSError, match="HTTP 206"):
        _policy().fetch_url(f"{server.url}/partial", max_bytes=cap)


def test_a_slow_server_times_out_within_the_deadline(serve, allow_local):
    def drip(h):  # a byte every 0.1 s: never idle long enough for the read timeout
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):
            h.wfile.write(b"\0")
            h.wfile.flush()
            time.sleep(0.1)

    def silent(h):
        time.sleep(5)

    def slow_headers(h):  # headers a line at a time: the deadline covers them too
        h.wfile.write(b"HTTP/1.0 200 OK\r\n")
        for i in range(100):
            h.wfile.write(f"X-Pad-{i}: 1\r\n".encode())
            h.wfile.flush()
            time.sleep(0.1)

    server = serve({"/drip": drip, "/silent": silent, "/headers": slow_headers})
    for path in ("/drip", "/headers"):
        t = time.monotonic()
        with pytest.raises(ImageRejected, match="1.5 s deadline"):
            _policy().fetch_url(f"{server.url}{path}", read_timeout=1.0, deadline=1.5)
        assert time.monotonic() - t < 2.5
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        _policy().fetch_url(f"{server.url}/silent", read_timeout=0.5, deadline=10)
    assert time.monotonic() - t < 1.5


def test_embedded_image_bytes_obey_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(image_stage, "MAX_IMAGE_BYTES", 10_000)
    small, large = PICTURE, _png(Image.effect_noise((100, 100), 80).convert("RGB"))
    assert len(small) < 10_000 < len(large)
    pl.DataFrame(
        {"id": ["s", "l"], "tags": ["1girl", "1girl"], "image": [{"bytes": small, "path": None}, {"bytes": large, "path": None}]}
    ).write_parquet(tmp_path / "rows.parquet")
    spec = SourceSpec(name="t", uri=str(tmp_path / "rows.parquet"), columns={"id": "id", "tags": "tags", "image": "image"}, images=True)
    chunk = Chunk.from_row(register(spec).row(0, named=True))
    records, _ = read_chunk(chunk, spec)
    images, rejects = image_stage.images_stage(records, chunk, spec)
    assert images.height == 1 and images.get_column("file_bytes").to_list() == [len(small)]
    assert rejects.get_column("reason").to_list() == [f"embedded image larger than 10,000 bytes ({len(large):,})"]


def _png16(path: Path, side: int) -> None:
    """A ``side`` x ``side`` 16-bit greyscale PNG, written a row at a time (a gradient, bands every 64 rows)."""
    import struct

    import numpy as np

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, parts, same = zlib.compressobj(9), [], b"\x02" + bytes(2 * side)  # filter 2 (up): a row like the one above
    for y in range(side):
        if y % 64:
            parts.append(z.compress(same))
        else:
            row = ((np.arange(side, dtype=np.uint32) * 10 + y * 5) % 65536).astype(">u2").tobytes()
            parts.append(z.compress(b"\x00" + row))
    parts.append(z.flush())
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


MEASURE = """
import json, resource, sys
import psutil
from charassets.domain.images.decode import decode_image

def peak_rss():  # this process's own high-water mark (ru_maxrss would also count the parent's, from before exec)
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

data = open(sys.argv[1], "rb").read()
before = psutil.Process().memory_info().rss
d = decode_image(data)
peak = peak_rss()
print(json.dumps({"growth_mb": (peak - before) / 2**20, "size": [d.width, d.height], "mode": d.mode, "image": list(d.image.size),
                  "corners": [d.image.getpixel((0, 0)), d.image.getpixel((d.image.width - 1, 0))]}))
"""


def test_a_16bit_png_decodes_within_bounded_memory(tmp_path):
    path = tmp_path / "big16.png"
    _png16(path, 6300)  # 39.7 megapixels, just under the bomb limit; ~1 MB on disk, 79 MB decoded
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["growth_mb"] < 200, got  # the float64 path peaked ~1 GB above its start
    assert got["size"] == [6300, 6300] and got["mode"] == "I;16"
    assert max(got["image"]) <= 2048  # shrunk before going to 8 bits
    (left, _, _), (right, _, _) = got["corners"]
    assert left == 0 and right > 200  # the 16-bit gradient, stretched to 8 bits


def test_each_remote_image_is_fetched_once_per_run(tmp_path, serve, allow_local):
    from charassets.definitions import build_definitions
    from charassets.defs.partitions import record_chunks
    from charassets.domain.images.decode import decode_image
    from charassets.domain.images.signals import image_signals
    from charassets.runner import run_partitions

    face = shared_file("images_dev/237060063cc1c26b.webp").read_bytes()  # one face, 512 px: kept as it is
    big = _png(Image.open(io.BytesIO(face)).convert("RGB").resize((1536, 1536), Image.Resampling.LANCZOS))  # shrunk to 1024
    server = serve({"/face.webp": body(face, content_type="image/webp"), "/big.png": body(big), "/small.png": body(PICTURE)})
    table = tmp_path / "table"
    table.mkdir()
    (table / "side.png").write_bytes(PICTURE)
    refs = [f"{server.url}/face.webp", f"{server.url}/big.png", f"{server.url}/small.png", f"{server.url}/missing.png", "side.png"]
    pl.DataFrame({"id": [f"p{i}" for i in range(len(refs))], "tags": ["1girl"] * len(refs), "image": refs}).write_parquet(
        table / "rows.parquet"
    )
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n- name: table\n  uri: {table / 'rows.parquet'}\n  images: true\n  remote_images: true\n")
    env = {"CHARASSETS_SOURCES": str(sources), "CHARASSETS_LAKE": str(tmp_path / "lake"), "CHARASSETS_HOME": str(tmp_path)}
    defs = build_definitions(env)
    job = dg.define_asset_job(
        "image_refs",
        selection=dg.AssetSelection.assets(
            ["raw", "records"], ["raw", "images"], ["features", "image_signals"]
        ).required_multi_asset_neighbors(),
        partitions_def=record_chunks,
    )
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    run_partitions(defs, dg.DagsterInstance.ephemeral(), job_name="image_refs", log_level="WARNING")

    assert dict(server.hits) == {"/face.webp": 1, "/big.png": 1, "/small.png": 1, "/missing.png": 1}  # raw/images only
    lake = defs.resources["lake"].lake()
    images, rejects = lake.read("raw", "images"), lake.read("raw", "image_rejects")
    assert images.height + rejects.height == len(refs)  # every image decoded or quarantined
    assert "FileNotFoundError" in rejects.get_column("reason")[0]
    copies = {r["image_ref"].rsplit("/", 1)[-1]: r["working_copy"] for r in images.iter_rows(named=True)}
    assert copies["face.webp"] == face and copies["side.png"] is None  # a small file is its own copy; local files keep none
    assert max(Image.open(io.BytesIO(copies["big.png"])).size) == 1024
    signals = lake.read("features", "image_signals").join(lake.read("raw", "records").select("record_id", "image_ref"), on="record_id")
    by_name = {r["image_ref"].rsplit("/", 1)[-1]: r for r in signals.iter_rows(named=True)}
    assert set(by_name) == {"face.webp", "big.png", "small.png", "side.png"} and by_name["face.webp"]["faces"] == 1
    # the working copy gives the signals the full picture gives (the detector works at 1024 px anyway), boxes in its own size
    direct = image_signals(decode_image(big).image)
    assert by_name["big.png"]["status"] == direct.status == "ok"
    assert by_name["big.png"]["face_boxes"] == [list(f.box) for f in direct.faces]
    assert json.loads(by_name["big.png"]["attributes"]) == direct.attributes
