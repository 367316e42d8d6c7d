"""The demo page at / in headless Chromium: pick a file, see the restored image appear.

Needs the Debian ``chromium`` and ``chromium-driver`` packages and the ``selenium``
test extra; skipped (with the command to run) where they are absent.
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers.images import encode, photo
from tests.helpers.service import LiveServer, settings_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and DRIVER),
                    reason="needs headless Chromium: apt-get install chromium chromium-driver")
def test_dropping_an_image_shows_before_and_after(model_dirs, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = tmp_path / "small.png"
    image.write_bytes(encode(photo(12, 20)))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    with LiveServer(settings_for({"sr": model_dirs["sr"]})) as server:
        browser = webdriver.Chrome(service=Service(DRIVER), options=options)
        try:
            browser.get(server.url + "/")
            WebDriverWait(browser, 30).until(
                lambda b: b.find_element(By.ID, "task").get_attribute("value") == "sr")
            browser.find_element(By.ID, "file").send_keys(str(image))
            loaded = ("const i = document.getElementById('after');"
                      "return i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0;")
            width = WebDriverWait(browser, 120).until(lambda b: b.execute_script(loaded))
            before = browser.execute_script(
                "return document.getElementById('before').naturalWidth;")
            status = browser.find_element(By.ID, "status").text
        finally:
            browser.quit()
    assert (before, width) == (20, 80)           # x4 super-resolution, side by side
    assert "seed" in status and "tiny-sr" in status
