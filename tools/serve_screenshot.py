"""The README's picture of the `maskformer serve` page (docs/serve.png), taken as a user sees it.

Starts `maskformer serve MODEL` on a free port of 127.0.0.1, opens the page in Debian's headless Chromium, uploads
synthetic scenes (the demo's kind; or your own images), clicks a segment of the newest so the tooltip and selection
show, and saves the page as a palette PNG::

    .venv/bin/maskformer demo --output-dir runs/demo          # or: maskformer train configs/demo.yaml ...
    .venv/bin/python tools/serve_screenshot.py runs/demo/model_final.pt --output docs/serve.png

Needs the ``serve`` extra, selenium (``dev``) and /usr/bin/chromium + /usr/bin/chromedriver.
"""

from __future__ import annotations

import argparse
import io
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1100,1400")  # fmt: skip


def scenes(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` synthetic 256x256 scenes of the demo's 8 classes, saved as scene<i>.png in ``folder``."""
    from maskformer.data.synthetic import generate_scene

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = generate_scene(rng, size=256, num_stuff=4, num_things=4)[0]
        paths.append(folder / f"scene{i + 1}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def serve(model: str, port: int) -> subprocess.Popen:
    """`maskformer serve MODEL --port PORT`, returned once /health answers (at most 120 s)."""
    proc = subprocess.Popen([sys.executable, "-m", "maskformer.cli", "serve", model, "--port", str(port)])
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"serve_screenshot: the server did not come up for {model}") from None
            time.sleep(0.5)


def shoot(url: str, images: list[Path], task: str | None, output: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#task option"))
        if task:
            Select(driver.find_element(By.ID, "task")).select_by_value(task)
        driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in images))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-done='1']")) == len(images))
        card = driver.find_elements(By.CSS_SELECTOR, ".card")[0]  # the newest card is on top
        overlay = card.find_element(By.CSS_SELECTOR, "img.overlay")
        # click the middle of the image (the overlay's left part; the picture shows it at the source's scale): the
        # page's tooltip and "selected" line show the segment there
        source, rect = card.find_element(By.CSS_SELECTOR, "img.src").rect, overlay.rect
        offset = (round(source["width"] * 0.3 - rect["width"] / 2), round(source["height"] * 0.6 - rect["height"] / 2))
        ActionChains(driver).move_to_element_with_offset(overlay, *offset).click().perform()
        time.sleep(0.3)
        height = driver.execute_script("return document.querySelector('main').getBoundingClientRect().bottom")
        shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
        shot = shot.crop((0, 0, shot.width, min(shot.height, int(height) + 4)))  # the page, not the empty window
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(output, optimize=True)
    print(f"{output}: {shot.size[0]}x{shot.size[1]}, {output.stat().st_size // 1024} KB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a checkpoint or model name, as for `maskformer serve`")
    parser.add_argument("--output", type=Path, default=Path("docs/serve.png"))
    parser.add_argument("--images", nargs="*", type=Path, help="images to upload (default: synthetic scenes)")
    parser.add_argument("--task", choices=["semantic", "panoptic"])
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        images = args.images or scenes(Path(tmp), 1, args.seed)
        proc = serve(args.model, port)
        try:
            shoot(f"http://127.0.0.1:{port}/", [p.resolve() for p in images], args.task, args.output)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
