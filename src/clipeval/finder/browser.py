"""Headless Chromium for the finder's page: the browser test and the run report's screenshot.

Chromium and chromedriver are Debian's packages (``apt-get install chromium chromium-driver``),
driven by Selenium (the ``dev`` extra). Both paths are given to Selenium explicitly, so Selenium
Manager never runs and nothing is downloaded; a missing browser raises :class:`BrowserMissing`,
whose message says how to install it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from clipeval.extras import require

INSTALL_HINT = ("install Debian's Chromium and its driver: sudo apt-get install -y chromium chromium-driver "
                "(or set CLIPEVAL_CHROMIUM and CLIPEVAL_CHROMEDRIVER to their paths)")
WAIT_S = 60


class BrowserMissing(RuntimeError):
    """Chromium or chromedriver is not installed; the message says how to install them."""


def find_chromium() -> tuple[str, str]:
    """The paths of the Chromium binary and of chromedriver, or :class:`BrowserMissing`."""
    browser = os.environ.get("CLIPEVAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = (os.environ.get("CLIPEVAL_CHROMEDRIVER") or shutil.which("chromedriver")
              or next((p for p in ("/usr/lib/chromium/chromedriver",) if Path(p).is_file()), None))
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver))
               if not path or not Path(path).is_file()]
    if missing:
        raise BrowserMissing(f"{' and '.join(missing)} not found: {INSTALL_HINT}")
    return browser, driver


@contextlib.contextmanager
def chromium_driver(size: tuple[int, int] = (1280, 900)) -> Iterator:
    """A headless Chromium WebDriver with its console log kept (``driver.get_log("browser")``)."""
    browser, driver_path = find_chromium()
    webdriver = require("selenium.webdriver", "dev", "driving Chromium (the finder's browser test and screenshot)")
    service_module = require("selenium.webdriver.chrome.service", "dev", "driving Chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--window-size={size[0]},{size[1]}", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = service_module.Service(executable_path=driver_path)  # a given path: Selenium Manager never runs
    driver = webdriver.Chrome(options=options, service=service)
    try:
        set_viewport(driver, *size)
        yield driver
    finally:
        driver.quit()


def wait_for_page(driver, url: str) -> str:
    """Open ``url`` and wait until the page has read the index's checkpoints, and answered the query its URL
    gives (``?q=...``) if any; its state, ``ready`` or ``done``."""
    wait = require("selenium.webdriver.support.wait", "dev", "driving Chromium")
    driver.get(url)
    wait.WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script("return document.body.dataset.state") in ("ready", "done", "error"))
    state = driver.execute_script("return document.body.dataset.state")
    if state == "error":
        raise RuntimeError(f"the finder page did not load: {_status(driver)}")
    return state


def searches(driver) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.searches)"))


def wait_for_answer(driver, before: int) -> str:
    """Wait until the page shows its next answer (after ``before`` answers); its state, ``done`` or ``error``."""
    wait = require("selenium.webdriver.support.wait", "dev", "driving Chromium")
    wait.WebDriverWait(driver, WAIT_S).until(lambda d: searches(d) > before)
    return driver.execute_script("return document.body.dataset.state")


def wait_for_thumbnails(driver) -> None:
    """Wait until every result image has finished loading (or failed: then naturalWidth stays 0)."""
    wait = require("selenium.webdriver.support.wait", "dev", "driving Chromium")
    wait.WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('.card img')).every(img => img.complete)"))


def choose_checkpoints(driver, specs: list[str]) -> None:
    """Pick the first checkpoint, and the second for the side-by-side view, in the page's controls."""
    if not specs:
        return
    driver.execute_script("""
        const [first, second] = arguments[0];
        document.getElementById('checkpoint').value = first;
        const both = document.getElementById('side-by-side');
        both.checked = Boolean(second);
        const other = document.getElementById('checkpoint2');
        other.disabled = !second;
        if (second) other.value = second;""", specs[:2])


def run_query_in_page(driver, url: str, query: str, specs: list[str], k: int) -> str:
    """Open the page, choose checkpoints and k, type ``query`` and submit; wait for the grid and its images."""
    by = require("selenium.webdriver.common.by", "dev", "driving Chromium").By
    wait_for_page(driver, url)
    choose_checkpoints(driver, specs)
    driver.execute_script("""
        const select = document.getElementById('k');
        if (![...select.options].some(o => o.value === arguments[0])) select.add(new Option(arguments[0]));
        select.value = arguments[0];""", str(k))
    before = searches(driver)
    box = driver.find_element(by.ID, "query")
    box.clear()
    box.send_keys(query)
    driver.find_element(by.ID, "search").click()
    state = wait_for_answer(driver, before)
    if state != "done":
        raise RuntimeError(f"the query {query!r} failed in the page: {_status(driver)}")
    wait_for_thumbnails(driver)
    return state


def set_viewport(driver, width: int, height: int) -> None:
    """Make the page's viewport exactly ``width`` x ``height`` CSS pixels (the window's size includes its frame)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def page_height(driver) -> int:
    return int(driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)"))


def _status(driver) -> str:
    return driver.execute_script("return document.getElementById('status').textContent")
