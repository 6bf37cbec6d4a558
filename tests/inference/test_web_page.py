"""The web page at / in a real headless browser: upload a clip, ask, read the streamed answer."""
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import MAX_NEW_TOKENS  # noqa: E402

BROWSER_PACKAGES = ("chromium", "chromium-driver")
"""Debian packages of the browser and its WebDriver."""


def browser_paths():
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if None in browser_paths():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(f"chromium and chromedriver are missing and cannot be installed here (needs root and apt-get "
                        f"for: apt-get install {' '.join(BROWSER_PACKAGES)})")
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *BROWSER_PACKAGES]):
            proc = subprocess.run(command, capture_output=True, text=True,
                                  env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            if proc.returncode != 0:
                pytest.skip(f"installing {' '.join(BROWSER_PACKAGES)} failed: {proc.stderr.strip()[-500:]}")
    chromium, chromedriver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=chromedriver), options=options)
    yield driver
    driver.quit()


def test_page_uploads_a_clip_and_streams_the_answer(browser, server_url, tiny_model, speech_corpus):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server_url
    clip, question = str(speech_corpus / "audio/test_2.wav"), "What does the speaker say?"
    browser.get(url + "/")
    browser.find_element(By.ID, "file").send_keys(clip)
    WebDriverWait(browser, 10).until(lambda b: "test_2.wav" in b.find_element(By.ID, "audio-status").text)
    box = browser.find_element(By.ID, "question")
    box.clear()
    box.send_keys(question)
    # Record every text the answer shows, to see it grow while the answer streams in.
    browser.execute_script("""
        window.shown = [];
        new MutationObserver(() => window.shown.push(document.getElementById('answer').textContent))
            .observe(document.getElementById('answer'), {childList: true, characterData: true, subtree: true});""")
    browser.find_element(By.ID, "ask").click()
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "status").text in ("done",) or
                                     b.find_element(By.ID, "status").text.startswith("error"))
    assert browser.find_element(By.ID, "status").text == "done"
    expected = tiny_model.generate([clip], [question], max_new_tokens=MAX_NEW_TOKENS)[0]
    assert browser.execute_script("return document.getElementById('answer').textContent") == expected
    shown = [s for s in browser.execute_script("return window.shown") if s]
    assert len(set(shown)) >= 2 and all(expected.startswith(s) for s in shown), shown
