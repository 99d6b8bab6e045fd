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
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_upload_shows_overlay_and_legend(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    checkpoint = train_tiny(tmp_path / "run")
    rng = np.random.default_rng(0)
    scene = np.zeros((120, 160, 3), np.uint8)
    scene[:60] = (40, 160, 230)
    scene[60:] = rng.integers(0, 256, (60, 160, 3), dtype=np.uint8)
    Image.fromarray(scene).save(tmp_path / "scene.png")
    with serving(checkpoint) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 2)
        Select(browser.find_element(By.ID, "task")).select_by_value("semantic")
        browser.find_element(By.ID, "files").send_keys(str(tmp_path / "scene.png"))
        wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".card[data-done='1']")))
        overlay = browser.find_element(By.CSS_SELECTOR, ".card img.overlay")
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
        legend = browser.find_element(By.CSS_SELECTOR, ".card .legend").text
        names = browser.execute_script("return fetch('/api/info').then(r => r.json()).then(i => i.classes.map(c => "
                                       "c.name))")  # fmt: skip
        assert any(name in legend for name in names), legend
        assert "model time" in browser.find_element(By.CSS_SELECTOR, ".card .meta").text
        shot = np.asarray(Image.open(io.BytesIO(overlay.screenshot_as_png)).convert("RGB")).astype(np.float32)
        assert shot.shape[0] >= 100 and shot.std() > 10  # a picture, not a blank box
        page = Image.open(io.BytesIO(browser.get_screenshot_as_png()))
        page.save(tmp_path / "page.png")
        assert np.asarray(page.convert("L")).std() > 10
