"""A real browser for the console's tests: Debian's chromium, headless, driven by Selenium
through Debian's chromedriver (both from apt: `chromium`, `chromium-driver`; nothing is
downloaded at run time).

Policy, as for PostgreSQL (tests/pg.py): without the browser the tests skip with a loud
reason on a laptop, and FAIL when CI=true, so a CI job can never pass by skipping them.

Selenium blocks; the relay under test runs on the test's event loop, so every browser call
goes through a thread (`Browser`) and the loop keeps serving the pages meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,900",
)
WAIT_S = 10.0  # for a page or an element; a condition met sooner returns sooner
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "console"
T = TypeVar("T")


def unavailable(problem: str) -> NoReturn:
    """Skip (laptop) or fail (CI=true) because the browser cannot be used; never returns."""
    reason = (
        f"\n{'!' * 78}\nBROWSER NOT AVAILABLE: {problem}\nThe console's browser tests did NOT"
        " run. Install Debian's chromium and chromium-driver (apt-get install -y chromium"
        f" chromium-driver); .ci/run does.\n{'!' * 78}"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires the browser: {reason}", pytrace=False)
    pytest.skip(reason)


def chromium() -> Iterator[Any]:
    """A headless chromium with a fresh profile, quit at the end (a module's fixture)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            unavailable(f"{path} is missing")
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        unavailable(f"selenium is not installed ({exc}); it is in the dev extras")
    profile = tempfile.mkdtemp(prefix="relay-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        chrome = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        unavailable(f"chromium did not start: {exc.msg}")
    chrome.set_page_load_timeout(WAIT_S)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Browser:
    """The driver on a thread of its own, for async tests; `base` is the console's origin."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    async def call(self, action: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(action, *args)

    async def open(self, path: str) -> None:
        await self.call(self.driver.get, self.base + path)

    async def find(self, css: str) -> Any:
        """The first element matching `css`, waiting for it to appear."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(self.driver, WAIT_S)
        located = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
        return await self.call(wait.until, located)

    async def click(self, css: str) -> None:
        element = await self.find(css)
        await self.call(element.click)

    async def wait_for(self, what: str, done: Callable[[Any], object]) -> None:
        """Until `done(driver)` is true (run on the driver's thread); fail on the deadline."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            await self.call(WebDriverWait(self.driver, WAIT_S).until, done)
        except TimeoutException:
            raise AssertionError(
                f"the page never showed {what}: {self.driver.current_url}"
            ) from None

    async def script(self, code: str) -> Any:
        return await self.call(self.driver.execute_script, code)

    async def text(self, css: str) -> str:
        element = await self.find(css)
        text: str = await self.call(lambda: element.text)
        return text

    async def screenshot(self, name: str, width: int) -> Path:
        """The whole page at `width` CSS pixels, saved as test-output/console/NAME-WIDTH.png."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}-{width}.png"
        await self.call(self._capture, path, width)
        return path

    def _capture(self, path: Path, width: int) -> None:
        metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        metrics["height"] = min(max(int(height), 600), 4000)
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        self.driver.save_screenshot(str(path))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
