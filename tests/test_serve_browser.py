"""The page in a real browser: headless Chromium (Debian's chromium + chromium-driver) through
Selenium uploads real recorded clips and waits for the caption and the tags, the per-window timeline,
and the events of a three-event recording (bars on the waveform that play their span; the upload's
progress while it goes).

Skips only outside CI (printing why) when the browser or Selenium is missing; in CI (env CI set) a
missing browser fails the test. scripts/setup.sh installs both where apt is available."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from serving import LoopbackServer, default_model, real_clips, three_events

CHROMIUM = os.environ.get("MATS_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("MATS_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT = os.environ.get("MATS_SCREENSHOT")  # where to keep the screenshot (docs/serve-page.png)


# The upload's pace while the events recording goes up (2.6 MB: 30 s of 44.1 kHz 16-bit mono, sent
# for the answer and for the zero-shot labels), so that the page's progress has something to show.
UPLOAD_BYTES_PER_S = 1_000_000
# Records every status text the page shows with the upload bar's value at that moment.
WATCH_UPLOAD = """
window.uploadSeen = [];
const status = document.getElementById('status'), bar = document.getElementById('upload');
new MutationObserver(() => window.uploadSeen.push([status.textContent, bar.value]))
  .observe(status, {childList: true, characterData: true, subtree: true});
"""


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, what in ((CHROMIUM, "chromium"), (DRIVER, "chromium-driver")):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{what} not found at {path} (apt-get install chromium chromium-driver, or scripts/setup.sh)"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test cannot run in CI: {why}")
        print(f"\nbrowser test skipped: {why}", file=sys.stderr)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,1500", "--lang=en-US", "--no-first-run",
                # a fake microphone (a beeping tone) that needs no permission prompt
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site():
    from mats.server import Settings, create_app
    settings = Settings(batch_window_ms=10)
    with LoopbackServer(create_app(default_model(), settings), settings) as server:
        yield server.url


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return real_clips(tmp_path_factory.mktemp("browser-clips"), 4)


def _sequence(clips, out: Path) -> Path:
    """Three real recordings, each repeated to fill one 10 s window: a clip with a timeline."""
    import soundfile as sf
    parts = []
    for c in clips:
        wave, sr = sf.read(str(c), dtype="float32", always_2d=True)
        wave = wave.mean(1)
        if sr != 44100:
            from mats.audio import resample
            wave = resample(wave, sr, 44100)
        parts.append(np.tile(wave, int(np.ceil(10 * 44100 / len(wave))))[: 10 * 44100])
    sf.write(str(out), np.concatenate(parts), 44100)
    return out


def test_page_captions_a_real_clip(browser, site, clips, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 240)
    browser.get(site + "/")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#task option"))
    assert "yamnet" in browser.find_element(By.ID, "model").text.lower()

    # a real recording of a sheep, as tags
    Select(browser.find_element(By.ID, "task")).select_by_value("/v1/tag")
    browser.find_element(By.ID, "file").send_keys(str(clips[0]))
    wait.until(EC.element_to_be_clickable((By.ID, "run"))).click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tags li"))
    tags = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#tags li")]
    assert tags and all(tags)
    assert browser.find_element(By.ID, "answer").text.strip()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#zeroshot li"))
    assert browser.find_elements(By.CSS_SELECTOR, "#why li")
    import json

    from mats.pipeline import DEFAULT_MODEL
    k = json.loads((DEFAULT_MODEL / "config.json").read_text())["model"].get("retrieval", {}).get("k", 0)
    if k:  # the shipped default prompts with retrieved texts: the panel says which were in the prompt
        assert f"the first {k} were written into the model's prompt" in browser.find_element(By.ID, "why-note").text
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None

    # three real recordings in a row, captioned, with the timeline of per-window answers
    Select(browser.find_element(By.ID, "task")).select_by_value("/v1/caption")
    longer = _sequence([clips[0], clips[2], clips[3]], tmp_path / "three-sounds.wav")
    browser.find_element(By.ID, "file").send_keys(str(longer))
    wait.until(EC.element_to_be_clickable((By.ID, "run"))).click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline li")) == 3)
    wait.until(EC.element_to_be_clickable((By.ID, "run")))
    caption = browser.find_element(By.ID, "answer").text
    assert caption.strip() and caption not in tags
    assert "answered in" in browser.find_element(By.ID, "status").text

    # an error in plain words: an unreadable file
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(200))
    browser.find_element(By.ID, "file").send_keys(str(bad))
    wait.until(EC.element_to_be_clickable((By.ID, "run"))).click()
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "not-audio.wav" in browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "file").send_keys(str(longer))  # back to the answer for the picture
    wait.until(EC.element_to_be_clickable((By.ID, "run"))).click()
    wait.until(lambda d: not d.find_element(By.ID, "error").is_displayed())
    wait.until(EC.element_to_be_clickable((By.ID, "run")))

    # a recording from the (fake) microphone: MediaRecorder, decoded and sent as WAV by the page
    Select(browser.find_element(By.ID, "task")).select_by_value("/v1/tag")
    browser.find_element(By.ID, "record").click()
    wait.until(lambda d: "Stop" in d.find_element(By.ID, "record").text)
    import time
    time.sleep(2.5)
    browser.find_element(By.ID, "record").click()
    wait.until(lambda d: d.find_element(By.ID, "clip-name").text == "recording.wav")
    wait.until(EC.element_to_be_clickable((By.ID, "run"))).click()
    wait.until(lambda d: "answered in" in d.find_element(By.ID, "status").text
               and d.find_element(By.ID, "answer").text != caption)
    assert browser.find_elements(By.CSS_SELECTOR, "#tags li")
    assert not browser.find_element(By.ID, "error").is_displayed()

    # events: three real sounds with silence between, uploaded slowly enough to show its progress
    Select(browser.find_element(By.ID, "task")).select_by_value("/v1/caption")
    # sheep, cow, phone: applause tiled to 7 s has a swell that the frame-placed change points cut as a
    # fourth event; what the cuts are worth is measured by benchmarks/long_audio.py, here the page is
    recording, spans = three_events([clips[0], clips[1], clips[2]], tmp_path / "three-events.wav", 44100)
    browser.find_element(By.ID, "file").send_keys(str(recording))
    events_toggle = browser.find_element(By.ID, "events")
    assert not events_toggle.is_selected()
    events_toggle.click()
    browser.execute_script(WATCH_UPLOAD)
    browser.set_network_conditions(offline=False, latency=0, download_throughput=-1,
                                   upload_throughput=UPLOAD_BYTES_PER_S)
    try:
        wait.until(EC.element_to_be_clickable((By.ID, "run"))).click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#event-bars button")
                   and d.find_element(By.ID, "run").is_enabled())
    finally:
        browser.delete_network_conditions()
    seen = browser.execute_script("return window.uploadSeen")
    shown = [v for text, v in seen if text.startswith("uploading ") and " % of " in text and 0 < v < 1]
    assert shown, seen  # the page said how much of the upload had gone, while it went
    assert browser.execute_script("return document.getElementById('upload').value") == 1
    assert not browser.find_element(By.ID, "upload").is_displayed()
    assert not browser.find_element(By.ID, "error").is_displayed()

    bars = browser.find_elements(By.CSS_SELECTOR, "#event-bars button")
    sounds = [b for b in bars if b.get_attribute("class") == "sound"]
    assert len(sounds) == 3 and len(bars) == 5  # three sounds, the two silences between them
    box = browser.execute_script("return document.getElementById('event-bars').getBoundingClientRect().toJSON()")
    duration = spans[-1][1]
    for bar, (start, end) in zip(sounds, spans, strict=True):
        rect = bar.rect
        left = (rect["x"] - box["x"]) / box["width"] * duration  # where the bar is drawn, in seconds
        right = (rect["x"] + rect["width"] - box["x"]) / box["width"] * duration
        assert abs(left - start) <= 1.0 and abs(right - end) <= 1.0, (left, right, start, end)
        assert abs(left - float(bar.get_attribute("data-start"))) <= duration / box["width"] * 1.5
        assert bar.text.strip() and rect["y"] >= box["y"] - 1
    answer = browser.find_element(By.ID, "answer").text
    assert answer.count(", then ") == 2  # the summary names the three events in order
    listed = browser.find_elements(By.CSS_SELECTOR, "#timeline li")
    assert len(listed) == 5 and [li.get_attribute("class") for li in listed].count("sound") == 3

    # clicking the second sound's bar plays its span, and only its span
    second = sounds[1]
    start, end = float(second.get_attribute("data-start")), float(second.get_attribute("data-end"))
    second.click()
    wait.until(lambda d: d.execute_script("const p = document.getElementById('player'); "
                                          "return !p.paused && p.currentTime > arguments[0]", start))
    assert "playing" in second.get_attribute("class")
    assert browser.execute_script("return document.getElementById('player').currentTime") < start + 2.0
    wait.until(lambda d: d.execute_script("return document.getElementById('player').paused"))
    stopped = browser.execute_script("return document.getElementById('player').currentTime")
    assert end <= stopped <= end + 0.5, (stopped, end)
    assert "playing" not in second.get_attribute("class")

    shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "serve-page.png"
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1100, max(900, height + 160))
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "not-audio" not in e["message"]
              and "400" not in e["message"]]
    assert not severe, severe  # no script errors, nothing blocked by the page's CSP
