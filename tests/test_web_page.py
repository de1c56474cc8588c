"""The upload page in headless Chromium (Debian's) against the real server.

Screenshots at 1280 and 375 px go to ``$SR_SCREENSHOT_DIR`` when set (for a closing
note or a review), else to the test's temporary folder.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests import imagegen
from tests.community_models import write_models
from tests.server import Server, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"),
]
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
MAX_INPUT_PIXELS = 200_000
MAX_OUTPUT_PIXELS = 1_000_000
DONE = "document.querySelector('#status').textContent.startsWith('Done')"
NATURAL = "img => [img.naturalWidth, img.naturalHeight]"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "SR_TILE_SIZE": "64",
        "SR_MAX_INPUT_PIXELS": str(MAX_INPUT_PIXELS),
        "SR_MAX_OUTPUT_PIXELS": str(MAX_OUTPUT_PIXELS),
        "SR_WARMUP": "false",  # the page, not the cost measurement (13 s a start here)
    }
    models = tmp_path_factory.mktemp("models")
    write_models(models, ["compact"])  # a community file (x4 only): the page must offer it from /v1/models alone
    env["SR_MODELS_DIR"] = str(models)
    with running_server(tmp_path_factory.mktemp("web"), env) as s:
        yield s


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def open_page(browser, server: Server, width: int = 1280):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def only_the_server(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(server.url) or route.request.url.startswith(("blob:", "data:")):
            route.continue_()
        else:  # as with no internet: the page must not need it
            errors.append(f"outside request: {route.request.url}")
            route.abort()

    page.route("**/*", only_the_server)
    page.errors = errors  # script errors and requests to elsewhere fail the test that saw them
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 1")
    return page


@pytest.fixture
def page(browser, server: Server) -> Iterator[object]:  # type: ignore[no-untyped-def]
    page = open_page(browser, server)
    yield page
    assert page.errors == []


def image_file(folder: Path, name: str, width: int, height: int) -> Path:
    path = folder / name
    imagegen.rgb(height, width).save(path)
    return path


def upload(page, path: Path, scale: str = "2") -> None:  # type: ignore[no-untyped-def]
    page.set_input_files("#image", str(path))
    page.select_option("#scale", scale)
    page.click("#go")
    page.wait_for_function(DONE, timeout=60_000)


def upscale_posts(page) -> list[str]:  # type: ignore[no-untyped-def]
    """The URLs of the page's uploads, from now on."""
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url) if r.method == "POST" else None)
    return urls


def test_upload_at_x2_shows_the_result_its_size_and_timing(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert page.eval_on_selector("#model", "el => el.value") == "espcn"
    assert page.eval_on_selector_all("#scale option", "els => els.map(e => e.value)") == ["2", "3", "4"]
    assert "dB on set5" in page.text_content("#model-info")  # PSNR from the cards, via /v1/models
    upload(page, image_file(tmp_path, "photo.png", 60, 40))
    assert page.eval_on_selector("#right", NATURAL) == [120, 80]
    assert page.eval_on_selector("#left", NATURAL) == [60, 40]  # the input itself, stretched with nearest
    assert "120x80" in page.text_content("#status")
    assert page.get_attribute("#download", "download") == "photo_espcn_120x80.png"
    names = page.eval_on_selector_all("#timing dt", "els => els.map(e => e.textContent)")
    assert names == ["decode", "queue", "compute", "encode", "round trip"]
    values = page.eval_on_selector_all("#timing dd", "els => els.map(e => e.textContent)")
    assert all(v.endswith(" ms") and float(v[:-3]) >= 0 for v in values)
    assert page.is_hidden("#progress") and page.is_hidden("#error")


def test_slider_zoom_pan_loupe_and_the_bicubic_side(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    upload(page, image_file(tmp_path, "photo.png", 60, 40))
    split = "el => Number(el.getAttribute('aria-valuenow'))"
    assert page.eval_on_selector("#divider", split) == 50
    page.focus("#divider")
    for _ in range(5):
        page.keyboard.press("ArrowLeft")  # keyboard accessible: 2 % a press
    assert page.eval_on_selector("#divider", split) == 40
    assert page.eval_on_selector("#layer-right", "el => el.style.clipPath") == "inset(0px 0px 0px 40%)"
    grip = page.locator("#divider").bounding_box()
    view = page.locator("#viewport").bounding_box()
    page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
    page.mouse.down()
    page.mouse.move(view["x"] + 0.75 * view["width"], grip["y"] + 10, steps=5)
    page.mouse.up()
    assert abs(page.eval_on_selector("#divider", split) - 75) <= 1

    rects = "() => ['#left', '#right'].map(s => { const r = document.querySelector(s).getBoundingClientRect(); "
    rects += "return [r.x, r.y, r.width, r.height]; })"
    page.click("button[data-zoom='2']")
    left, right = page.evaluate(rects)
    assert left == right and right[2:] == [240, 160]  # 200 %: one output pixel is 2 CSS px, on both sides
    page.mouse.move(view["x"] + 100, view["y"] + 100)  # pan by drag: both sides move together
    page.mouse.down()
    page.mouse.move(view["x"] + 40, view["y"] + 70, steps=4)
    page.mouse.up()
    moved_left, moved_right = page.evaluate(rects)
    assert moved_left == moved_right and [moved_right[0] - right[0], moved_right[1] - right[1]] == [-60, -30]
    page.mouse.move(view["x"] + view["width"] / 2 - 30, view["y"] + view["height"] / 2 - 30)
    assert page.is_visible("#loupe")  # the pixels under the pointer, both sides, enlarged
    page.uncheck("#loupe-on")
    page.mouse.move(view["x"] + view["width"] / 2, view["y"] + view["height"] / 2)
    assert page.is_hidden("#loupe")

    page.click("button[data-zoom='fit']")
    before = page.locator("#viewport").screenshot()
    posts = upscale_posts(page)
    page.check("#bicubic")
    page.wait_for_function("document.querySelector('#left-tag').textContent.startsWith('bicubic')")
    assert page.eval_on_selector("#left", NATURAL) == [120, 80]  # made by the server at the output's size
    assert len(posts) == 1 and "model=bicubic" in posts[0] and "width=120" in posts[0]
    page.wait_for_function("document.querySelector('#left').complete")
    assert page.locator("#viewport").screenshot() != before
    page.uncheck("#bicubic")
    assert page.eval_on_selector("#left", NATURAL) == [60, 40]


def test_an_error_replaces_the_result(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    upload(page, image_file(tmp_path, "photo.png", 60, 40))
    assert page.is_visible("#result")
    bogus = tmp_path / "not-an-image.png"
    bogus.write_bytes(b"hello, I am text")
    page.set_input_files("#image", str(bogus))
    page.wait_for_function("document.querySelector('#input-info').textContent.includes('no preview')")
    page.click("#go")
    page.wait_for_function("document.querySelector('#status').textContent === 'Error'", timeout=30_000)
    message = page.text_content("#error")
    assert "Error 422" in message and "field: image" in message and "code: bad_image" in message
    assert page.is_hidden("#result")
    assert page.get_attribute("#right", "src") is None and page.get_attribute("#download", "href") is None


def test_two_uploads_in_a_row_each_show_their_own(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = image_file(tmp_path, "first.png", 60, 40)
    second = image_file(tmp_path, "second.png", 50, 30)
    page.set_input_files("#image", str(first))
    page.click("#go")
    page.set_input_files("#image", str(second))  # before the first has answered
    page.click("#go")
    page.wait_for_function(DONE, timeout=60_000)
    page.wait_for_load_state("networkidle")  # the first's answer, if it came, must not show
    assert page.eval_on_selector("#right", NATURAL) == [100, 60]
    assert page.get_attribute("#download", "download") == "second_espcn_100x60.png"
    upload(page, first, scale="3")
    assert page.eval_on_selector("#right", NATURAL) == [180, 120]
    assert page.get_attribute("#download", "download") == "first_espcn_180x120.png"


def test_oversize_images_are_refused_before_the_upload(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    posts = upscale_posts(page)
    page.set_input_files("#image", str(image_file(tmp_path, "big.png", 500, 500)))  # 250k > 200k pixels
    page.wait_for_function("document.querySelector('#error').textContent.includes('max_input_pixels')")
    page.click("#go")
    page.set_input_files("#image", str(image_file(tmp_path, "fine.png", 300, 300)))
    page.select_option("#scale", "4")  # 1200x1200 out: over 1M output pixels
    page.click("#go")
    assert "max_output_pixels" in page.text_content("#error")
    assert posts == []


def test_size_by_width_and_height(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page.select_option("#model", "bicubic")
    page.set_input_files("#image", str(image_file(tmp_path, "photo.png", 60, 40)))
    page.wait_for_function("document.querySelector('#input-info').textContent.includes('60x40')")
    page.check("input[name=size-mode][value=size]")
    page.fill("#width", "90")
    assert page.input_value("#height") == "60"  # the aspect ratio kept
    page.select_option("#format", "jpeg")
    assert page.is_enabled("#quality")
    page.fill("#quality", "70")
    posts = upscale_posts(page)
    page.click("#go")
    page.wait_for_function(DONE, timeout=60_000)
    assert page.eval_on_selector("#right", NATURAL) == [90, 60]
    assert "quality=70" in posts[0] and "format=jpeg" in posts[0]
    page.uncheck("#keep-aspect")
    page.fill("#height", "30")
    page.click("#go")
    page.wait_for_function(DONE, timeout=60_000)
    assert page.eval_on_selector("#right", NATURAL) == [90, 30]


def test_drop_and_paste(page) -> None:  # type: ignore[no-untyped-def]
    png = io.BytesIO()
    imagegen.rgb(40, 60).save(png, format="PNG")
    make_file = "(b64, name) => new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))], name, {type: 'image/png'})"
    data = base64.b64encode(png.getvalue()).decode()
    page.evaluate(
        f"([b64]) => {{ const dt = new DataTransfer(); dt.items.add(({make_file})(b64, 'dropped.png'));"
        "document.querySelector('#drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true})); }",
        [data],
    )
    page.wait_for_function("document.querySelector('#input-info').textContent.startsWith('dropped.png · 60x40')")
    page.evaluate(
        f"([b64]) => {{ const dt = new DataTransfer(); dt.items.add(({make_file})(b64, 'pasted.png'));"
        "document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true})); }",
        [data],
    )
    page.wait_for_function("document.querySelector('#input-info').textContent.startsWith('pasted.png · 60x40')")
    page.click("#go")
    page.wait_for_function(DONE, timeout=60_000)
    assert page.eval_on_selector("#right", NATURAL) == [120, 80]


def test_the_api_key_is_kept_for_the_session_only(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    page = open_page(browser, server)
    page.fill("#apikey", "k-123")
    page.dispatch_event("#apikey", "change")
    page.reload()
    page.wait_for_function("document.querySelectorAll('#model option').length > 1")
    assert page.input_value("#apikey") == "k-123"
    fresh = open_page(browser, server)  # another browser context: another session
    assert fresh.input_value("#apikey") == ""


def test_a_community_model_is_offered_at_its_own_scale(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page.select_option("#model", "compact")
    assert page.eval_on_selector_all("#scale option", "els => els.map(e => e.value)") == ["4"]
    upload(page, image_file(tmp_path, "small.png", 30, 20), scale="4")
    assert page.eval_on_selector("#right", NATURAL) == [120, 80]


def test_restore_first_then_upscale(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    restorers = page.eval_on_selector_all("#restore option", "els => els.map(e => e.value)")
    assert restorers == ["", "dejpeg", "denoise"]
    page.select_option("#model", "bicubic")  # a resizer: any factor
    assert page.eval_on_selector_all("#scale option", "els => els.map(e => e.value)") == ["2", "3", "4", "1.5", "8"]
    page.select_option("#model", "espcn")
    page.select_option("#restore", "denoise")
    posts = upscale_posts(page)
    upload(page, image_file(tmp_path, "noisy.png", 50, 30))
    assert "restore=denoise" in posts[0]
    assert page.eval_on_selector("#right", NATURAL) == [100, 60]


@pytest.mark.parametrize("width", [1280, 375])
def test_screenshots_at_desktop_and_phone_width(browser, server: Server, tmp_path: Path, width: int) -> None:  # type: ignore[no-untyped-def]
    folder = Path(os.environ.get("SR_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page = open_page(browser, server, width)
    source = tmp_path / "photo.png"
    imagegen.scene(96, 128).save(source)
    upload(page, source, scale="3")
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing wider than the phone
    page.click("button[data-zoom='2']")
    page.locator("#viewport").scroll_into_view_if_needed()
    box = page.locator("#viewport").bounding_box()
    assert box["width"] <= width and box["height"] > 200
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    assert page.is_visible("#loupe")
    shot = folder / f"page-{width}.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as im:
        assert im.size[0] == width
    assert page.errors == []


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
