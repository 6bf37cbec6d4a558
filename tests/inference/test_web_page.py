"""The web page at / in a real headless browser: upload a clip, ask, read the streamed answer."""
import os
import shutil
import subprocess

import pytest

from tests.helpers import MAX_NEW_TOKENS

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
    # The fake media flags give the page a microphone (a beeping test signal) without asking.
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=chromedriver), options=options)
    yield driver
    driver.quit()


def wait_for_answer(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "status").text == "done" or
                                     b.find_element(By.ID, "status").text.startswith("error"))
    assert browser.find_element(By.ID, "status").text == "done"
    return browser.execute_script("return document.getElementById('answer').textContent")


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
    answer = wait_for_answer(browser)
    assert answer == tiny_model.generate([clip], [question], max_new_tokens=MAX_NEW_TOKENS)[0]
    shown = [s for s in browser.execute_script("return window.shown") if s]
    assert len(set(shown)) >= 2 and all(answer.startswith(s) for s in shown), shown


def test_page_records_from_the_microphone_and_asks_about_the_recording(browser, server_url):
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server_url
    browser.get(url + "/")
    browser.find_element(By.ID, "record").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "record").text == "Stop")
    time.sleep(1.5)
    browser.find_element(By.ID, "record").click()
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "audio-status").text.startswith("recorded"))
    seconds = float(browser.find_element(By.ID, "audio-status").text.split()[1])
    assert 1.0 < seconds < 5.0
    browser.find_element(By.ID, "ask").click()
    assert wait_for_answer(browser)  # the recording went to the server as WAV and was answered
