"""The local web app, driven in headless Chromium (Debian's ``chromium``) as a user would: upload, paste, click, read."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

import charassets.app as app_module
import charassets.domain.images.decode as images_module
from charassets.app import MAX_UPLOAD_BYTES, PUBLIC_FLAG, is_loopback, main, public_host_warning
from charassets.domain.images.signals import image_record
from charassets_tests.conftest import free_port, server, shared_file

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """The app in its own process, with its own upload folder; yields its URL and a function giving its log's tail."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("uploads"))}
    cmd = [sys.executable, "-m", "charassets.app", "--host", "127.0.0.1", "--port", str(port)]
    with server(cmd, lambda: urllib.request.urlopen(url, timeout=2), "charassets app", 120, env) as log_tail:
        yield url, log_tail


@pytest.fixture(scope="module")
def app_url(app_server):
    return app_server[0]


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "Debian's chromium is needed for the browser tests (.ci/run installs it)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield b
        b.close()


FILE_INPUT = "#image-input input[type=file]"


def _upload_in_page(page, image: str) -> None:
    """Choose ``image`` in the file widget and wait until the upload finished (its name is listed)."""
    page.locator(FILE_INPUT).set_input_files(image, timeout=60_000)
    page.wait_for_selector(f"#image-input >> text={os.path.basename(image)}", timeout=30_000)
    page.wait_for_load_state("networkidle", timeout=30_000)  # the upload's requests are done: the widget holds the file


def _extract_once(page, url: str, tags: str | None, image: str | None) -> tuple[str, str, int]:
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#extract", timeout=60_000)  # the app has rendered
    page.wait_for_selector(FILE_INPUT, state="attached", timeout=60_000)  # and so has the upload widget, loaded on its own
    if tags:
        page.locator("#tags-input textarea").fill(tags)
    if image:
        _upload_in_page(page, image)
    page.locator("#extract").click()
    page.wait_for_function("() => (document.querySelector('#record')?.innerText || '').includes('status')", timeout=60_000)
    record = "".join(page.locator("#record").inner_text().split())  # the JSON viewer puts every token on its own line
    if image and '"status":"rejected"' not in record:
        page.wait_for_selector("#shown img", timeout=30_000)
    return record, page.locator("#evidence").inner_text(), page.locator("#shown img").count()


def _page_text(page) -> str:
    try:
        return page.locator("body").inner_text(timeout=5_000)
    except PlaywrightTimeout:
        return "(the page did not answer)"


def _extract(browser, app_server, tags: str | None, image: str | None, attempts: int = 3) -> tuple[str, str, int]:
    """Fill the form in a fresh page, click Extract, read the record, the evidence and the pictures shown.

    On a loaded machine (CI runs the suite on both cores) a page can stall while it loads a widget or
    takes an upload; the whole interaction is then tried again in a fresh page, up to ``attempts``
    times. A final failure shows what the page held and the server's log.
    """
    url, log_tail = app_server
    failures = []
    for _ in range(attempts):
        page = browser.new_page()
        try:
            return _extract_once(page, url, tags, image)
        except PlaywrightTimeout as e:
            failures.append(f"{str(e).splitlines()[0]}\npage:\n{_page_text(page)[:1500]}")
        finally:
            page.close()
    raise AssertionError("\n\n".join(failures) + f"\nserver log:\n{log_tail()}")


def test_tags_and_image_give_the_record_and_its_evidence(browser, app_server):
    image = str(shared_file("images_dev/237060063cc1c26b.webp"))  # one character, drawn with light hair
    record, evidence, shown = _extract(browser, app_server, "1girl, solo, long hair, smile", image)
    assert '"status":"ok"' in record and '"subject_count":1' in record and '"faces":1,"face_boxes":[[' in record
    assert "Gender" in evidence and "1girl" in evidence  # from the tags
    assert "animeface:hair=#" in evidence  # the hair colour read from the picture, with its evidence
    assert shown == 1  # the decoded picture with its face boxed


def test_a_broken_upload_is_rejected_with_its_reason(browser, app_server, tmp_path):
    bad = tmp_path / "broken.png"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    bad.write_bytes(buf.getvalue()[:80])
    record, _, shown = _extract(browser, app_server, None, str(bad))
    assert '"status":"rejected"' in record and "corruptortruncated" in record and shown == 0


def test_several_characters_in_tags_are_flagged_ambiguous(browser, app_server):
    record, _, _ = _extract(browser, app_server, "2girls, multiple girls, long hair, red hair", None)
    assert '"status":"ambiguous"' in record


def _upload(url: str, name: str, data: bytes) -> int:
    """POST one file to Gradio's upload route, as the browser does; the HTTP status."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/gradio_api/upload", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_server_refuses_an_upload_over_the_size_limit(app_url):
    assert _upload(app_url, "small.png", b"x" * 1024) == 200
    assert _upload(app_url, "huge.png", b"x" * (MAX_UPLOAD_BYTES + 1)) == 413  # refused while receiving, not stored


# The Extract button's handler, as the app wires it, called without a browser.


@pytest.fixture(scope="module")
def handler(ontology):
    app = app_module.build_app(ontology)
    (fn,) = [f.fn for f in app.fns.values()]
    return fn


@pytest.fixture
def decodes(monkeypatch):
    """Counts of ``decode_image`` and ``PIL.Image.open`` calls while a test runs."""
    counts = {"decode_image": 0, "Image.open": 0}
    decode, open_ = images_module.decode_image, Image.open

    def counting_decode(*args, **kwargs):
        counts["decode_image"] += 1
        return decode(*args, **kwargs)

    def counting_open(*args, **kwargs):
        counts["Image.open"] += 1
        return open_(*args, **kwargs)

    monkeypatch.setattr(images_module, "decode_image", counting_decode)
    monkeypatch.setattr(Image, "open", counting_open)
    return counts


def _png(path: Path, size=(96, 64)) -> Path:
    Image.new("RGB", size, (40, 120, 200)).save(path, format="PNG")
    return path


def _one_decode_per_upload(handler, decodes, ontology, path: Path) -> None:
    expected = image_record(path.read_bytes(), path.name, ontology)  # what the pipeline's image path gives
    for tags in (None, "1girl, solo, long hair, smile"):
        decodes.update({"decode_image": 0, "Image.open": 0})
        record, _, shown = handler(str(path), tags)
        assert decodes == {"decode_image": 1, "Image.open": 1}, (tags, decodes)
        assert shown is not None and shown.size == (expected["image"]["width"], expected["image"]["height"])
        assert record["image"] == expected["image"]
        if tags is None:
            assert record == expected  # decoding once in the app gives the same record as image_record


def test_each_upload_is_decoded_once(handler, decodes, ontology, tmp_path):
    _one_decode_per_upload(handler, decodes, ontology, _png(tmp_path / "plain.png"))


def test_each_upload_with_a_face_is_decoded_once(handler, decodes, ontology):
    path = shared_file("images_dev/237060063cc1c26b.webp")
    _one_decode_per_upload(handler, decodes, ontology, path)


def test_an_upload_over_the_limit_is_rejected_before_it_is_decoded(handler, decodes, tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: no 16 MB written
    record, rows, shown = handler(str(big), None)
    assert record["status"] == "rejected" and "over the upload limit" in record["reason"], record
    assert set(record) >= {"id", "record_id", "status", "reason", "flags", "attributes"} and record["id"] == "big.png"
    assert rows == [] and shown is None and decodes["decode_image"] == 0
    record, _, shown = handler(str(big), "1girl, solo, long hair")  # with tags: the tags decide, the image is flagged
    assert "image_rejected" in record["flags"] and any("over the upload limit" in f for f in record["flags"])
    assert shown is None and decodes["decode_image"] == 0


def test_the_size_limit_holds_while_reading(monkeypatch, tmp_path):
    """A file that grows after its size was checked is still read no further than the limit."""
    from charassets.domain.images.decode import ImageRejected

    path = tmp_path / "grows.png"
    path.write_bytes(b"x" * 101)
    real_stat = os.stat

    def stale_stat(p, *args, **kwargs):  # the size as it was when checked: 10 bytes
        st = real_stat(p, *args, **kwargs)
        return os.stat_result((*st[:6], 10, *st[7:])) if Path(p) == path else st

    monkeypatch.setattr(app_module.os, "stat", stale_stat)
    with pytest.raises(ImageRejected, match="upload limit"):
        app_module.read_upload(path, limit=100)
    assert app_module.read_upload(path, limit=101) == b"x" * 101


def test_an_unexpected_error_is_logged_not_shown(handler, monkeypatch, caplog, tmp_path):
    import charassets.domain.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/charassets/private.py")

    monkeypatch.setattr(pipeline, "extract_one", broken)
    with caplog.at_level(logging.ERROR, logger="charassets.app"):
        record, rows, shown = handler(str(_png(tmp_path / "ok.png")), "1girl, solo")
    shown_text = json.dumps(record)
    assert record["status"] == "error" and "server log" in record["reason"] and rows == [] and shown is None
    assert "secret" not in shown_text and "Traceback" not in shown_text and "RuntimeError" not in shown_text
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert "secret internals" in str(logged.exc_info[1])  # the traceback stays on the server
    assert logged.getMessage().split("reference ")[1].rstrip(")") in record["reason"]  # the reference ties the two together


# The command line: what it launches, and the host it agrees to bind, without starting a server.


class _FakeApp:
    def __init__(self):
        self.launched: dict | None = None

    def launch(self, **kwargs):
        self.launched = kwargs


@pytest.fixture
def fake_app(monkeypatch):
    fake = _FakeApp()
    monkeypatch.setattr(app_module, "build_app", lambda **kwargs: fake)
    return fake


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST", " localhost "])
def test_loopback_hosts(host):
    assert is_loopback(host) and public_host_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", "my-laptop", ""])
def test_other_hosts_are_public(host):
    assert not is_loopback(host)
    assert "no authentication" in public_host_warning(host)


def test_launch_hides_errors_and_caps_uploads(fake_app):
    result = CliRunner().invoke(main, ["--host", "127.0.0.1", "--port", "7861"])
    assert result.exit_code == 0, result.output
    assert fake_app.launched["show_error"] is False  # no tracebacks in the browser
    assert fake_app.launched["max_file_size"] == MAX_UPLOAD_BYTES  # Gradio refuses larger uploads
    assert fake_app.launched["server_name"] == "127.0.0.1" and fake_app.launched["server_port"] == 7861
    assert "WARNING" not in result.stderr


def test_a_public_host_is_refused_without_the_flag(fake_app):
    result = CliRunner().invoke(main, ["--host", "0.0.0.0"])
    assert result.exit_code == 2 and fake_app.launched is None
    assert "no authentication" in result.stderr and PUBLIC_FLAG in result.stderr


def test_a_public_host_is_served_with_the_flag_and_a_warning(fake_app):
    result = CliRunner().invoke(main, ["--host", "0.0.0.0", PUBLIC_FLAG])
    assert result.exit_code == 0, result.output
    assert fake_app.launched["server_name"] == "0.0.0.0" and fake_app.launched["show_error"] is False
    assert "WARNING" in result.stderr and "no authentication" in result.stderr and result.stdout == ""
