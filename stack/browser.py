"""Debian's Chromium, headless, driven through selenium with Debian's chromedriver.

The driver's path is given explicitly, so selenium never looks for (or downloads) a driver of its
own. Install both with `apt-get install chromium chromium-driver` (`.ci/run` does).
"""
from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def missing() -> str | None:
    """Why a browser cannot be started here, or None when it can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing: apt-get install {package}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -r requirements-dev.txt"
    return None


def chromium(width: int = 1280, height: int = 900):
    """A headless Chromium with a `width` x `height` window that keeps its console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--disable-extensions",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def viewport(driver, width: int, height: int) -> None:
    """Make the page's viewport exactly `width` x `height` CSS pixels, like a phone's."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})


def full_viewport(driver) -> None:
    """Undo `viewport`."""
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
