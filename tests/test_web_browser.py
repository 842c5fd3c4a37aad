"""The review page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium) against a real `vigil serve` child process.

Two cameras play a synthetic fight from a file once (`loop: false`): the tiny model's events
open at once (thresholds are the harness's always-on ones) and end when the files end
(`camera_lost`), which writes the evidence clips. The browser opens the list, opens one event,
plays its clip (the <video> element must report a duration: the browser really decoded it),
clicks "False alarm", marks the other camera's event "Real", and both clips are then in
`data_dir/review/` where `vigil data check` accepts them (a dataset of negatives only is
refused by it: nothing to learn).

Set VIGIL_SCREENSHOTS=DIR to save the list and event pages as PNGs (docs/review.md's images).
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vigil_tools.harness import DaemonProcess, base_config, free_port, wait_until

CHROMIUM = os.environ.get("VIGIL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VIGIL_CHROMEDRIVER", "/usr/bin/chromedriver")

pytestmark = pytest.mark.integration


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found: install Debian's {pkg} (scripts/system-packages.sh)"
    return None


@pytest.fixture()
def browser():
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,1000", "--autoplay-policy=no-user-gesture-required",
                "--mute-audio", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _fight_video(path: Path, seed: int) -> Path:
    from train.synth import Scene, write_video

    write_video(path, Scene("fight", seed=seed, width=160, height=120, fps=15, frames=90))
    return path


def _ended_event(db_path: Path, camera: str) -> dict | None:
    if not db_path.is_file():
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT body FROM alerts WHERE camera = ? AND type = 'end' "
                         "AND json_extract(body, '$.label') = 'fight' "
                         "ORDER BY seq DESC LIMIT 1", (camera,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return json.loads(row[0]) if row else None


def test_review_a_fight_event_in_chromium_and_mark_it_a_false_alarm(browser, tiny_checkpoint,
                                                                   tmp_path):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    data = tmp_path / "data"
    cfg = base_config(data, tiny_checkpoint, {
        "door": str(_fight_video(tmp_path / "door.mp4", seed=3)),
        "hall": str(_fight_video(tmp_path / "hall.mp4", seed=4)),
        "yard": "synth://none?seed=2&width=96&height=72&fps=10&frames=40"}, stride=4)
    cfg["cameras"][0]["loop"] = cfg["cameras"][1]["loop"] = False
    cfg["evidence"]["pre_roll_s"] = 1.0
    port = free_port()
    cfg["web"] = {"enabled": True, "port": port}
    daemon = DaemonProcess(tmp_path, cfg).start()
    try:
        daemon.wait_ready(timeout=60)
        ended: dict[str, dict] = {}

        def clips_written() -> bool:
            for cam in ("door", "hall"):
                end = _ended_event(data / "journal.sqlite3", cam)
                if end and end.get("clip") and (data / end["clip"]).is_file():
                    ended[cam] = end
            return len(ended) == 2
        assert wait_until(clips_written, timeout=60), daemon.log()
        event_id = ended["door"]["event_id"]
        base = f"http://127.0.0.1:{port}"
        shots = os.environ.get("VIGIL_SCREENSHOTS")

        # the cameras page: states and the serving model
        browser.get(base + "/")
        assert "tiny.pt" in browser.find_element(By.ID, "model-path").text
        assert browser.find_element(By.ID, "camera-yard").find_elements(By.CLASS_NAME, "up")

        # a fight the model missed on a running camera: its last seconds become a clip
        browser.find_element(By.CSS_SELECTOR, "#camera-yard button.missed-live").click()
        WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,
                                                       NoSuchElementException)).until(
            lambda d: "kept as missed fight" in d.find_element(By.ID, "message").text)

        # the list, newest first; open the event
        browser.get(base + "/events?camera=door")
        if shots:
            browser.get(base + "/events")
            browser.save_screenshot(str(Path(shots) / "review-list.png"))
            browser.get(base + "/events?camera=door")
        links = [a for a in browser.find_elements(By.CLASS_NAME, "event-link")
                 if a.get_attribute("href").endswith("/events/" + event_id)]
        assert links, browser.page_source[:2000]
        links[0].click()
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "clip"))
        assert not browser.find_elements(By.ID, "clip-missing")
        snapshot = browser.find_element(By.CSS_SELECTOR, "img.snap")
        assert browser.execute_script("return arguments[0].complete && "
                                      "arguments[0].naturalWidth > 0", snapshot)

        # play the clip: the browser decodes it and reports its duration
        video_el = browser.find_element(By.ID, "clip")
        WebDriverWait(browser, 60).until(
            lambda d: d.execute_script("return arguments[0].readyState >= 1", video_el),
            message="the clip never loaded its metadata")
        duration = browser.execute_script("return arguments[0].duration", video_el)
        assert duration and duration > 1.0, duration
        error = browser.execute_script("return arguments[0].error && arguments[0].error.code",
                                       video_el)
        assert not error
        browser.execute_script("arguments[0].play()", video_el)
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return arguments[0].currentTime > 0.2", video_el),
            message="the clip does not play")
        if shots:
            browser.execute_script("arguments[0].pause(); arguments[0].currentTime = 1.0;",
                                   video_el)
            browser.save_screenshot(str(Path(shots) / "review-event.png"))

        # mark it a false alarm (a plain form POST with its CSRF token)
        browser.find_element(By.ID, "mark-false").click()
        WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,
                                                       NoSuchElementException)).until(
            lambda d: d.find_element(By.ID, "verdict").text == "false alarm")
        assert "marked false alarm" in browser.find_element(By.ID, "message").text

        # and the other camera's fight is real: the dataset then has a positive to learn from
        browser.get(base + "/events/" + ended["hall"]["event_id"])
        browser.find_element(By.ID, "mark-real").click()
        WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,
                                                       NoSuchElementException)).until(
            lambda d: d.find_element(By.ID, "verdict").text == "real")
    finally:
        code = daemon.stop()
        daemon.close()
    assert code == 0, daemon.log()

    review = data / "review"
    rows = (review / "labels.csv").read_text().splitlines()
    assert f"clips/{event_id}.mp4,none,,,door" in rows
    hall = ended["hall"]["event_id"]
    assert [r for r in rows if r.startswith(f"clips/{hall}.mp4,fight,") and r.endswith(",hall")]
    assert [r for r in rows if r.startswith("clips/yard-") and ",fight,0.00," in r]
    assert (review / "clips" / f"{event_id}.mp4").stat().st_size > 0
    vigil = shutil.which("vigil", path=str(Path(sys.executable).parent))
    check = subprocess.run([vigil, "data", "check", str(review)], capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
