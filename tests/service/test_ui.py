"""The demo page at / in headless Chromium: pick a file, see the restored image appear.

Needs the Debian ``chromium`` and ``chromium-driver`` packages and the ``selenium``
test extra; skipped (with the command to run) where they are absent.
"""

from __future__ import annotations

import io
import shutil

import httpx
import pytest
from PIL import Image

from tests.helpers.images import encode, photo
from tests.helpers.service import LiveServer, settings_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

# ids of the images the page draws without a decoded picture: the browser's
# broken-image icon (and alt text) is what the user would see there.
VISIBLE_BROKEN = """
return Array.from(document.images).filter((i) => {
  const r = i.getBoundingClientRect();
  const drawn = r.width > 0 && r.height > 0 && getComputedStyle(i).visibility !== "hidden";
  return drawn && !(i.complete && i.naturalWidth > 0);
}).map((i) => i.id || i.alt);"""

RECT = """const r = document.getElementById(arguments[0]).getBoundingClientRect();
return [r.left, r.top, r.width, r.height];"""

# Which image is on top at a fraction of the comparison box's width (mid-height): the
# visible split. The divider and labels let clicks through, so they never answer.
TOP_AT = """const r = document.getElementById("stage").getBoundingClientRect();
const e = document.elementFromPoint(r.left + arguments[0] * r.width, r.top + r.height / 2);
return e ? e.id : null;"""


@pytest.mark.skipif(not (CHROMIUM and DRIVER),
                    reason="needs headless Chromium: apt-get install chromium chromium-driver")
def test_dropping_an_image_shows_before_and_after(model_dirs, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    image = tmp_path / "small.png"
    image.write_bytes(encode(photo(24, 40)))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1000,800"):
        options.add_argument(flag)
    with LiveServer(settings_for({"sr": model_dirs["sr"]})) as server:
        icon = httpx.get(server.url + "/favicon.ico", timeout=30)
        browser = webdriver.Chrome(service=Service(DRIVER), options=options)
        try:
            browser.get(server.url + "/")
            WebDriverWait(browser, 30).until(
                lambda b: b.find_element(By.ID, "task").get_attribute("value") == "sr")
            broken_before_upload = browser.execute_script(VISIBLE_BROKEN)
            icon_link = browser.execute_script(
                "return document.querySelector('link[rel~=icon]').href;")

            browser.find_element(By.ID, "file").send_keys(str(image))
            done = ("return document.getElementById('compare').classList.contains('done')"
                    " && document.getElementById('after').naturalWidth;")
            width = WebDriverWait(browser, 120).until(lambda b: b.execute_script(done))
            before = browser.execute_script(
                "return document.getElementById('before').naturalWidth;")
            status = browser.find_element(By.ID, "status").text
            broken_after_restore = browser.execute_script(VISIBLE_BROKEN)
            shown = {i: browser.execute_script(RECT, i)
                     for i in ("before", "after", "stage", "split")}

            halves = [browser.execute_script(TOP_AT, f) for f in (0.25, 0.75)]
            slider = browser.find_element(By.ID, "split")
            slider.send_keys(Keys.HOME)                  # split at the left edge: all after
            at_home = [browser.execute_script(TOP_AT, f) for f in (0.1, 0.9)]
            slider.send_keys(Keys.END)                   # at the right edge: all before
            at_end = [browser.execute_script(TOP_AT, f) for f in (0.1, 0.9)]
            # a click at 80% of the slider's width moves the split there
            ActionChains(browser).move_to_element_with_offset(
                slider, int(0.3 * shown["split"][2]), 0).click().perform()
            value = float(slider.get_attribute("value"))
            at_click = [browser.execute_script(TOP_AT, f) for f in (0.6, 0.95)]
        finally:
            browser.quit()

    assert broken_before_upload == []
    assert (before, width) == (40, 160)          # x4 super-resolution
    assert "seed" in status and "tiny-sr" in status
    assert broken_after_restore == []
    # One box: the input is drawn over the result at the result's displayed size (here
    # its natural size), and the slider spans the box.
    assert shown["after"][2:] == pytest.approx([160, 96], abs=0.5)
    assert shown["before"] == pytest.approx(shown["after"], abs=0.5)
    assert shown["split"][0] == pytest.approx(shown["stage"][0], abs=0.5)
    assert shown["split"][2] == pytest.approx(shown["stage"][2], abs=0.5)
    # Left of the split the input shows, right of it the result.
    assert halves == ["before", "after"]
    assert at_home == ["after", "after"]
    assert at_end == ["before", "before"]
    assert 70 <= value <= 90 and at_click == ["before", "after"]

    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon_link.endswith("/favicon.ico")
    ico = Image.open(io.BytesIO(icon.content))
    assert ico.format == "ICO" and (32, 32) in ico.info["sizes"]
