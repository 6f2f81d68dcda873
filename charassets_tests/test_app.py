"""The local web app, driven in headless Chromium (Debian's ``chromium``) as a user would: upload, paste, click, read."""

from __future__ import annotations

import io
import os
import shutil
import sys
import urllib.request

import pytest
from PIL import Image

from charassets_tests.conftest import free_port, server, shared_file

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "charassets.app", "--host", "127.0.0.1", "--port", str(port)]
    with server(cmd, lambda: urllib.request.urlopen(url, timeout=2), "charassets app", 120, env):
        yield url


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "Debian's chromium is needed for the browser tests (.ci/run installs it)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield b
        b.close()


def _extract(browser, url: str, tags: str | None, image: str | None) -> tuple[str, str, int]:
    page = browser.new_page()
    try:
        page.goto(url, wait_until="domcontentloaded")
        if tags:
            page.locator("#tags-input textarea").fill(tags)
        if image:
            page.locator("#image-input input[type=file]").set_input_files(image)
            page.wait_for_selector(f"#image-input >> text={os.path.basename(image)}", timeout=30_000)  # upload finished
        page.locator("#extract").click()
        page.wait_for_function("() => (document.querySelector('#record')?.innerText || '').includes('status')", timeout=60_000)
        record = "".join(page.locator("#record").inner_text().split())  # the JSON viewer puts every token on its own line
        if image and '"status":"rejected"' not in record:
            page.wait_for_selector("#shown img", timeout=30_000)
        return record, page.locator("#evidence").inner_text(), page.locator("#shown img").count()
    finally:
        page.close()


def test_tags_and_image_give_the_record_and_its_evidence(browser, app_url):
    image = str(shared_file("images_dev/237060063cc1c26b.webp"))  # one character, drawn with light hair
    record, evidence, shown = _extract(browser, app_url, "1girl, solo, long hair, smile", image)
    assert '"status":"ok"' in record and '"subject_count":1' in record and '"faces":1,"face_boxes":[[' in record
    assert "Gender" in evidence and "1girl" in evidence  # from the tags
    assert "animeface:hair=#" in evidence  # the hair colour read from the picture, with its evidence
    assert shown == 1  # the decoded picture with its face boxed


def test_a_broken_upload_is_rejected_with_its_reason(browser, app_url, tmp_path):
    bad = tmp_path / "broken.png"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    bad.write_bytes(buf.getvalue()[:80])
    record, _, shown = _extract(browser, app_url, None, str(bad))
    assert '"status":"rejected"' in record and "corruptortruncated" in record and shown == 0


def test_several_characters_in_tags_are_flagged_ambiguous(browser, app_url):
    record, _, _ = _extract(browser, app_url, "2girls, multiple girls, long hair, red hair", None)
    assert '"status":"ambiguous"' in record
