"""The upload page in headless Chromium against the real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests import imagegen
from tests.server import Server, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("web"), {"SR_TILE_SIZE": "64"}) as s:
        yield s


@pytest.fixture
def page(server: Server) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("document.querySelectorAll('#model option').length > 1")
        yield page
        browser.close()


def test_upload_and_see_the_result(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "photo.png"
    imagegen.rgb(40, 60).save(source)
    assert page.eval_on_selector("#model", "el => el.value") == "espcn"
    options = page.eval_on_selector_all("#scale option", "els => els.map(e => e.value)")
    assert options == ["2", "3", "4"]
    page.set_input_files("#image", str(source))
    page.select_option("#scale", "3")
    page.click("#go")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')", timeout=60_000)
    assert page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]") == [180, 120]
    assert "180x120" in page.text_content("#status")
    assert page.get_attribute("#download", "download") == "photo_x3.png"
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as im:
        assert im.size[0] > 300


def test_server_errors_are_shown(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "not-an-image.png"
    bogus.write_bytes(b"hello, I am text")
    page.set_input_files("#image", str(bogus))
    page.click("#go")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Error')", timeout=30_000)
    assert "422" in page.text_content("#status")
    assert page.get_attribute("#status", "class") == "error"


def test_api_docs_render_offline(server: Server) -> None:
    """/docs draws the upscale operation from the server's own files: no request leaves it."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def only_the_server(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(server.url):
            route.continue_()
        else:  # as without internet: the page must not need it
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.route("**/*", only_the_server)
        page.goto(server.url + "/docs")
        operation = page.locator("#operations-upscale-upscale_v1_upscale_post")
        operation.wait_for(timeout=30_000)
        assert "/v1/upscale" in operation.inner_text()
        operation.click()  # expanded: its parameters come from /openapi.json
        page.get_by_text("priority", exact=True).first.wait_for(timeout=10_000)
        browser.close()
    assert outside == []


def test_restore_first_then_upscale(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "noisy.png"
    imagegen.rgb(30, 50).save(source)
    restorers = page.eval_on_selector_all("#restore option", "els => els.map(e => e.value)")
    assert restorers == ["", "dejpeg", "denoise"]
    page.select_option("#model", "bicubic")  # a resizer: any factor
    assert page.eval_on_selector_all("#scale option", "els => els.map(e => e.value)") == ["2", "3", "4", "1.5"]
    page.select_option("#model", "espcn")
    page.set_input_files("#image", str(source))
    page.select_option("#restore", "denoise")
    page.click("#go")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')", timeout=60_000)
    assert page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]") == [100, 60]
