"""The `maskformer serve` page in a real browser: headless Chromium (Debian's chromium + chromium-driver) picks an
image, waits for the overlay, and the screenshot shows it (not blank) with the legend's class names."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve_helpers import serving, train_tiny

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless Chromium is absent (apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, read by the tests
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A `maskformer serve` process on a checkpoint written by `maskformer train`."""
    with serving(train_tiny(tmp_path_factory.mktemp("run"))) as url:
        yield url


def _wait(browser):
    """A 60 s wait whose conditions are tried again when the page replaced an element they had just found (a card
    re-rendered between ``find_element`` and ``.text``: StaleElementReferenceException, once in CI)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


def _scene(path: Path) -> Path:
    rng = np.random.default_rng(0)
    scene = np.zeros((120, 160, 3), np.uint8)
    scene[:60] = (40, 160, 230)
    scene[60:] = rng.integers(0, 256, (60, 160, 3), dtype=np.uint8)
    Image.fromarray(scene).save(path)
    return path


def test_upload_shows_overlay_and_legend(browser, server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select

    _scene(tmp_path / "scene.png")
    browser.get(server + "/")
    wait = _wait(browser)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 2)
    Select(browser.find_element(By.ID, "task")).select_by_value("semantic")
    browser.find_element(By.ID, "files").send_keys(str(tmp_path / "scene.png"))
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".card[data-done='1']")))
    overlay = browser.find_element(By.CSS_SELECTOR, ".card img.overlay")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
    legend = browser.find_element(By.CSS_SELECTOR, ".card .legend").text
    hint = browser.find_element(By.CSS_SELECTOR, ".card .picked").text
    expected = (
        "Hover the overlay for a segment's class and area; "
        "click it or its legend entry to keep it here and show it alone."
    )
    assert hint == expected, hint  # no score
    names = browser.execute_script("return fetch('/api/info').then(r => r.json()).then(i => i.classes.map(c => "
                                   "c.name))")  # fmt: skip
    assert any(name in legend for name in names), legend
    assert "model time" in browser.find_element(By.CSS_SELECTOR, ".card .meta").text
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # (a missing favicon once logged a 404 on every page load)
    shot = np.asarray(Image.open(io.BytesIO(overlay.screenshot_as_png)).convert("RGB")).astype(np.float32)
    assert shot.shape[0] >= 100 and shot.std() > 10  # a picture, not a blank box
    page = Image.open(io.BytesIO(browser.get_screenshot_as_png()))
    page.save(tmp_path / "page.png")
    assert np.asarray(page.convert("L")).std() > 10

    # a click on the overlay names the class under the cursor: the label map's class at a pixel inside a
    # uniform 9x9 patch (so rounding of the cursor position cannot change the answer)
    labels = np.asarray(Image.open(io.BytesIO(_api_label_png(server, tmp_path / "scene.png"))))
    y, x = _uniform_pixel(labels)
    rect = overlay.rect  # the image part of the overlay picture (its legend panel is in the download only)
    natural = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", overlay)
    assert natural == [labels.shape[1], labels.shape[0]]
    source = browser.find_element(By.CSS_SELECTOR, ".card img.src").rect
    assert (source["width"], source["height"]) == (rect["width"], rect["height"])  # shown at the source's scale
    scale = rect["width"] / natural[0]
    ActionChains(browser).move_to_element_with_offset(
        overlay, round((x + 0.5) * scale - rect["width"] / 2), round((y + 0.5) * scale - rect["height"] / 2)
    ).click().perform()
    picked = browser.find_element(By.CSS_SELECTOR, ".card .picked").text
    assert picked.startswith(f"selected: {names[labels[y, x]]} · "), (picked, names[labels[y, x]])

    # the card switches to the other task in place
    browser.find_element(By.CSS_SELECTOR, ".card button.switch").click()
    wait.until(lambda d: "— panoptic" in d.find_element(By.CSS_SELECTOR, ".card h2").text  # (not "show panoptic")
               and d.find_element(By.CSS_SELECTOR, ".card").get_attribute("data-done") == "1")  # fmt: skip
    assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 1
    assert "model time" in browser.find_element(By.CSS_SELECTOR, ".card .meta").text

    # picking the same file again is a new upload (the input kept its value, so nothing happened)
    browser.find_element(By.ID, "files").send_keys(str(tmp_path / "scene.png"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-done='1']")) == 2)


def _api_label_png(url: str, image: Path) -> bytes:
    """The label PNG of ``image`` from POST /api/predict (semantic)."""
    import base64
    import json
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'.encode()
            + image.read_bytes() + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="task"\r\n\r\n'
            f"semantic\r\n--{boundary}--\r\n".encode())  # fmt: skip
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    with urllib.request.urlopen(urllib.request.Request(url + "/api/predict", data=body, headers=headers)) as r:
        return base64.b64decode(json.loads(r.read())["label_png"])


def _uniform_pixel(labels: np.ndarray) -> tuple[int, int]:
    """(y, x) of a pixel whose 9x9 neighbourhood has one label (the most central such pixel)."""
    h, w = labels.shape
    candidates = [(abs(y - h / 2) + abs(x - w / 2), y, x) for y in range(4, h - 4) for x in range(4, w - 4)
                  if (labels[y - 4 : y + 5, x - 4 : x + 5] == labels[y, x]).all()]  # fmt: skip
    assert candidates, "no uniform 9x9 patch in the prediction"
    return min(candidates)[1:]


def _b64png(array: np.ndarray) -> str:
    import base64

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_hover_and_click_find_the_segment_under_the_cursor(browser, server: str, tmp_path: Path) -> None:
    """The page's hit test on a known answer: the API's reply is replaced in the browser by one whose segments are
    the left and right halves of a 200x100 image, with a 150-pixel legend panel right of the overlay (as the real
    overlay has), which the page leaves out of the shown picture: a look-up or a display that used the whole
    picture's width would name or show the wrong half."""
    import json

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    width, height = 200, 100
    ids = np.ones((height, width), np.uint8)
    ids[:, 100:] = 2
    segments_png = np.stack([ids, np.zeros_like(ids), np.zeros_like(ids)], axis=-1)
    picture = np.full((height, width + 150, 3), 255, np.uint8)
    picture[:, :100], picture[:, 100:200] = (200, 40, 40), (40, 40, 200)
    segment = {"category_id": 0, "isthing": False, "area": 100 * height}
    answer = {
        "task": "semantic", "width": width, "height": height, "time_ms": 1.0,
        "segments": [{**segment, "id": 1, "label": "left half", "color": [200, 40, 40]},
                     {**segment, "id": 2, "label": "right half", "category_id": 1, "color": [40, 40, 200]}],
        "overlay_png": _b64png(picture), "label_png": _b64png(ids - 1), "segments_png": _b64png(segments_png),
    }  # fmt: skip
    browser.get(server + "/")
    wait = _wait(browser)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 2)
    browser.execute_script(
        "const answer = arguments[0], real = window.fetch;"
        "window.fetch = (url, options) => url === '/api/predict' ? Promise.resolve(new Response(answer, "
        "{status: 200, headers: {'Content-Type': 'application/json'}})) : real(url, options);",
        json.dumps(answer),
    )
    browser.find_element(By.ID, "files").send_keys(str(_scene(tmp_path / "scene.png")))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card[data-done='1']"))
    overlay = browser.find_element(By.CSS_SELECTOR, ".card img.overlay")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
    rect = overlay.rect
    natural = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", overlay)
    assert natural == [width, height]  # the page shows the image part, without the legend panel
    scale = rect["width"] / width
    for x, name in [(30, "left half"), (160, "right half"), (110, "right half")]:
        offset = (round((x + 0.5) * scale - rect["width"] / 2), round((50.5 * scale) - rect["height"] / 2))
        ActionChains(browser).move_to_element_with_offset(overlay, *offset).perform()
        assert browser.find_element(By.CSS_SELECTOR, ".card .tip").text.startswith(f"{name} · 10000 px (50.0 %)")
        ActionChains(browser).move_to_element_with_offset(overlay, *offset).click().perform()
        assert browser.find_element(By.CSS_SELECTOR, ".card .picked").text.startswith(f"selected: {name} · ")
        legend = browser.find_element(By.CSS_SELECTOR, ".card .legend button.on").text
        assert legend.startswith(name), legend
    figure = overlay.find_element(By.XPATH, "..")

    def halves() -> tuple[np.ndarray, np.ndarray]:  # the shown picture's left and right half, middle row
        shot = np.asarray(Image.open(io.BytesIO(figure.screenshot_as_png)).convert("RGB")).astype(int)
        row = shot[round(shot.shape[0] * 0.5)]
        return row[round(shot.shape[1] * 0.2)], row[-3]

    # a click selected the right half: it is shown alone (the left half dimmed), and the shown part is the
    # picture's left, not a squeezed copy of the whole: its right edge is the blue half
    left, right = halves()
    assert np.abs(right - (40, 40, 200)).max() < 30 and left.max() < 100, (left, right)
    # a legend entry selects its segment too; clicking it again shows the whole picture
    entry = browser.find_elements(By.CSS_SELECTOR, ".card .legend button")[0]
    entry.click()
    assert browser.find_element(By.CSS_SELECTOR, ".card .picked").text.startswith("selected: left half · ")
    assert "on" in entry.get_attribute("class")
    left, right = halves()
    assert np.abs(left - (200, 40, 40)).max() < 30 and right.max() < 100, (left, right)
    entry.click()
    assert not browser.find_elements(By.CSS_SELECTOR, ".card .legend button.on")
    assert browser.find_element(By.CSS_SELECTOR, ".card .picked").text.startswith("Hover the overlay")
    left, right = halves()
    assert np.abs(left - (200, 40, 40)).max() < 30 and np.abs(right - (40, 40, 200)).max() < 30, (left, right)
    # the download keeps the whole picture, legend panel included
    href = browser.find_element(By.CSS_SELECTOR, ".card a.dl[download$='_overlay.png']").get_attribute("href")
    assert href == "data:image/png;base64," + answer["overlay_png"]


def test_a_dropped_file_that_is_no_image_gets_a_card_that_says_so(browser, server: str) -> None:
    """Dropped files whose browser type was not image/* were dropped silently (no card, no message)."""
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    wait = _wait(browser)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 2)
    browser.execute_script("""
        const files = new DataTransfer();
        files.items.add(new File(["just some words"], "notes.txt", {type: "text/plain"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: files, bubbles: true}));
    """)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card[data-done='error']"))
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert "notes.txt" in card.find_element(By.TAG_NAME, "h2").text
    assert "image" in card.find_element(By.CSS_SELECTOR, ".meta.error").text.lower()


def test_a_picture_wider_than_a_canvas_gets_its_card_and_the_next_file_is_sent(browser, server, tmp_path) -> None:
    """A 70000-px-wide upload (accepted by the server) threw in the page's overlay crop: its card stayed empty, the
    status line said "2 image(s)…" forever and the second file was never sent."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Image.new("RGB", (70000, 40), (40, 160, 230)).save(tmp_path / "pano.png")
    _scene(tmp_path / "small.png")
    browser.get(server + "/")
    wait = _wait(browser)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 2)
    Select(browser.find_element(By.ID, "task")).select_by_value("semantic")  # (a segment everywhere: a map to read)
    browser.find_element(By.ID, "files").send_keys(f"{tmp_path / 'pano.png'}\n{tmp_path / 'small.png'}")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-done='1']")) == 2)
    assert browser.find_element(By.ID, "status").text == ""
    titles = [c.find_element(By.CSS_SELECTOR, "h2").text for c in browser.find_elements(By.CSS_SELECTOR, ".card")]
    assert any(t.startswith("pano.png") for t in titles) and any(t.startswith("small.png") for t in titles), titles
    # no hover look-ups on it, and the card says so: Chromium gave a 70000-px canvas whose pixels read as zeros, so
    # the card offered hovering that found nothing
    [pano] = [c for c in browser.find_elements(By.CSS_SELECTOR, ".card") if c.text.startswith("pano.png")]
    assert "too large for the browser to look up segments" in pano.find_element(By.CSS_SELECTOR, ".picked").text


def test_a_very_thin_picture_is_shown_and_its_pixels_answer_the_cursor(browser, server, tmp_path) -> None:
    """A 3 x 5000 upload was scaled to 70vh tall and so 0 px wide: nothing to see or hover. It now keeps a minimum
    width, and the cursor maps to pixels per axis (the picture is stretched, not at its own aspect)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Image.new("RGB", (3, 5000), (40, 160, 230)).save(tmp_path / "thin.png")
    browser.get(server + "/")
    wait = _wait(browser)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 2)
    Select(browser.find_element(By.ID, "task")).select_by_value("semantic")
    browser.find_element(By.ID, "files").send_keys(str(tmp_path / "thin.png"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card[data-done='1']"))
    overlay = browser.find_element(By.CSS_SELECTOR, ".card img.overlay")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
    assert overlay.rect["width"] >= 5 and overlay.rect["height"] >= 100, overlay.rect
    ActionChains(browser).move_to_element_with_offset(overlay, 0, round(overlay.rect["height"] / 4)).click().perform()
    assert browser.find_element(By.CSS_SELECTOR, ".card .picked").text.startswith("selected: ")
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_keyboard_tooltip_edges_long_names_and_a_failed_switch(browser, server, tmp_path) -> None:
    """The file picker is reached with Tab (its input was display:none); the tooltip near the overlay's right edge
    stays in the window (it widened the page); a long name wraps inside a narrow window; a task switch that fails
    keeps the result on the card and says why beside it (the card was wiped, with no way back)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.get(server + "/")
    wait = _wait(browser)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 2)
    reached = []
    for _ in range(4):  # (keys to the page: sent to a file input they would be taken for a file's name)
        ActionChains(browser).send_keys(Keys.TAB).perform()
        reached.append(browser.execute_script("return document.activeElement.id"))
    assert "files" in reached, reached

    Select(browser.find_element(By.ID, "task")).select_by_value("semantic")
    name = "a_very_long_file_name_without_any_spaces_that_goes_on_and_on_for_a_while_camera_export_final_v2.png"
    _scene(tmp_path / name)
    browser.find_element(By.ID, "files").send_keys(str(tmp_path / name))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card[data-done='1']"))
    overlay = browser.find_element(By.CSS_SELECTOR, ".card img.overlay")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
    page = browser.execute_script("return document.documentElement.clientWidth")
    ActionChains(browser).move_to_element_with_offset(overlay, round(overlay.rect["width"] / 2) - 2, 0).perform()
    tip = browser.find_element(By.CSS_SELECTOR, ".card .tip")
    wait.until(lambda d: tip.is_displayed())
    box = browser.execute_script("return arguments[0].getBoundingClientRect().toJSON()", tip)
    assert box["left"] >= 0 and box["right"] <= page, (box, page)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= page

    browser.set_window_size(400, 900)
    wide = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert wide[0] <= wide[1], wide

    browser.execute_script("window.fetch = () => Promise.reject(new TypeError('Failed to fetch'))")  # server gone
    browser.find_element(By.CSS_SELECTOR, ".card button.switch").click()
    wait.until(lambda d: "Failed to fetch" in d.find_element(By.CSS_SELECTOR, ".card").text)
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert card.find_elements(By.CSS_SELECTOR, "img.overlay") and card.get_attribute("data-done") == "1"
    assert "panoptic: the server did not answer" in card.text
    assert card.find_element(By.CSS_SELECTOR, "button.switch").is_enabled()  # it can be tried again


def test_two_picks_a_strip_and_a_result_the_page_cannot_decode(browser, server, tmp_path) -> None:
    """Found by a browser walk: the status line went blank while a second pick still ran; a 4000 x 50 strip showed 8 px
    high; a switch whose answer the browser could not decode wiped the card's result (no error, switch disabled)."""
    import time

    from selenium.webdriver.common.by import By

    _scene(tmp_path / "a.png")
    Image.new("RGB", (4000, 50), (40, 160, 230)).save(tmp_path / "strip.png")
    browser.get(server + "/")
    wait = _wait(browser)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 2)
    browser.find_element(By.ID, "files").send_keys(str(tmp_path / "a.png"))
    browser.find_element(By.ID, "files").send_keys(str(tmp_path / "strip.png"))
    seen, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:  # (one script reads both at once: the page cannot change between them)
        running, status = browser.execute_script(
            "return [document.querySelectorAll('.card:not([data-done])').length, $('status').textContent]"
        )
        seen.append((running, status))
        if running == 0 and len(browser.find_elements(By.CSS_SELECTOR, ".card[data-done='1']")) == 2:
            break
        time.sleep(0.05)
    assert not [s for s in seen if s[0] and not s[1]], seen  # something runs: the status line says so
    assert browser.find_element(By.ID, "status").text == ""
    strip = browser.find_element(By.CSS_SELECTOR, ".card img.overlay")  # (the newest card is first)
    assert strip.rect["height"] >= 31, strip.rect

    browser.execute_script("""
        const real = window.fetch;
        window.fetch = async (url, options) => {
          const answer = await (await real(url, options)).json();
          answer.overlay_png = "bm90IGEgcGljdHVyZQ==";  // base64 of words: no PNG
          return new Response(JSON.stringify(answer), {status: 200});
        };""")
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    card.find_element(By.CSS_SELECTOR, "button.switch").click()
    wait.until(lambda d: "cannot show the result" in d.find_element(By.CSS_SELECTOR, ".card").text)
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert card.find_elements(By.CSS_SELECTOR, "img.overlay") and card.get_attribute("data-done") == "1"
    assert card.find_element(By.CSS_SELECTOR, "button.switch").is_enabled()

    browser.set_window_size(375, 800)  # a phone: the header's model path wraps, the pictures take the width
    wide = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert wide[0] <= wide[1], wide
    src = browser.find_element(By.CSS_SELECTOR, ".card img.src")  # (the strip's, 4000 px wide: it was 46 % wide)
    assert src.rect["width"] >= 0.7 * wide[1], src.rect


def test_a_server_that_cannot_be_reached_is_said_and_nothing_half_shown(browser, server, tmp_path) -> None:
    """/api/info failing once left "loading…" for good, and an upload then made a broken card plus an error card."""
    import time

    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/info"]})
    browser.get(server + "/")
    _scene(tmp_path / "photo.png")
    wait = _wait(browser)
    wait.until(lambda d: "cannot be reached" in d.find_element(By.ID, "model").text)  # (after its last try)
    browser.find_element(By.ID, "files").send_keys(str(tmp_path / "photo.png"))
    wait.until(lambda d: "not sent" in d.find_element(By.ID, "status").text)
    assert not browser.find_elements(By.CSS_SELECTOR, ".card")
    # back while the page still tries: the next pick is sent, and the page's own later try adds nothing twice
    browser.get(server + "/")
    browser.find_element(By.ID, "files").send_keys(str(tmp_path / "photo.png"))
    wait.until(lambda d: "not sent" in d.find_element(By.ID, "status").text)
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    browser.find_element(By.ID, "files").send_keys(str(tmp_path / "photo.png"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-done='1']")) == 1)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 1
    time.sleep(10)  # (the page's own tries: 1 + 2 + 3 + 4 s apart)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#task option")) == 2
    assert "classes" in browser.find_element(By.ID, "model").text
