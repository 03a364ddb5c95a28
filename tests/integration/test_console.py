"""The web console in a real headless browser (Debian's chromium through its chromedriver): the
sign-in refuses a wrong secret, the overview lists the mappings, a mapping's page shows each
shard's owner and an iterator age that changes, Pause changes the mapping's state through the API,
and a key that may not update mappings cannot press Pause (nor call the API with the session).
Screenshots are kept in .cache/test-artifacts/console/."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import BrokerRunner
from tests.integration.helpers import function, wait_until
from tests.servers import Aws, RecordingTarget, create_stream, put_records, stream_arn

pytestmark = [
    pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                       reason="Debian's chromium and chromedriver are not installed "
                              "(apt-get install chromium chromium-driver; .ci/run does it as root)"),
    pytest.mark.timeout(300),
]
T = TypeVar("T")
MAPPING = "6f1a2b3c-0000-4000-8000-00000000dd01"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".cache" / "test-artifacts" / "console"
API = {"host": "127.0.0.1", "port": 0, "credentials": [
    {"AccessKeyId": "admin", "SecretAccessKey": "s3cret-admin", "Actions": ["lambda:*", "broker:*"]},
    {"AccessKeyId": "viewer", "SecretAccessKey": "s3cret-viewer",
     "Actions": ["broker:DescribeStatus", "broker:ListQuarantine", "lambda:GetEventSourceMapping"]}]}


def _browser(profile: Path) -> Any:
    from selenium import webdriver  # noqa: PLC0415 - only where chromium is

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))


async def _on(call: Callable[[], T]) -> T:
    """A blocking WebDriver call, off the event loop the broker runs on."""
    return await asyncio.to_thread(call)


def _text(driver: Any, css: str) -> str:
    """The text of what ``css`` finds ("" while the page is being redrawn: it refreshes itself)."""
    from selenium.common.exceptions import StaleElementReferenceException  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    try:
        return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))
    except StaleElementReferenceException:
        return ""


def _sign_in(driver: Any, key: str, secret: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver.find_element(By.ID, "key-id").clear()
    driver.find_element(By.ID, "key-id").send_keys(key)
    driver.find_element(By.ID, "secret").clear()
    driver.find_element(By.ID, "secret").send_keys(secret)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def _shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


async def test_the_console_in_a_browser(aws: Aws, broker: BrokerRunner, target: RecordingTarget,
                                        tmp_path: Path) -> None:
    await create_stream(aws, "console", shards=2)
    m = {"UUID": MAPPING, "FunctionName": "f", "EventSourceArn": stream_arn("console"),
         "StartingPosition": "TRIM_HORIZON", "BatchSize": 10}
    settings = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
                "status_interval_seconds": 0.5}
    async with broker.run(function(target), [m], api=API, replica_id="r1", **settings) as app:
        base = f"http://127.0.0.1:{app.api_port}/console/"
        feeding = True

        async def feed() -> None:
            n = 0
            while feeding:
                await put_records(aws, "console", [(f"k{n % 7}", json.dumps({"n": n}).encode())])
                n += 1
                await asyncio.sleep(0.3)
        feeder = asyncio.create_task(feed())
        driver = await _on(lambda: _browser(tmp_path / "admin"))
        try:
            await _on(lambda: driver.get(base))
            await wait_until(lambda: _on(lambda: "Sign in" in _text(driver, "h1")), timeout=20)
            await _on(lambda: _sign_in(driver, "admin", "not-the-secret"))
            await wait_until(lambda: _on(lambda: "not right" in _text(driver, "#login-error")), timeout=20)
            await _on(lambda: _sign_in(driver, "admin", "s3cret-admin"))
            await wait_until(lambda: _on(lambda: MAPPING in _text(driver, "main table")), timeout=20)
            assert "signed in as admin" in await _on(lambda: _text(driver, "#who"))
            assert "r1" in await _on(lambda: _text(driver, "main table"))
            await _on(lambda: _shot(driver, "overview"))

            await _on(lambda: driver.get(f"{base}#/mapping/{MAPPING}"))

            def shard_rows() -> list[list[str]]:
                from selenium.common.exceptions import StaleElementReferenceException  # noqa: PLC0415
                from selenium.webdriver.common.by import By  # noqa: PLC0415

                try:
                    tables = [t for t in driver.find_elements(By.CSS_SELECTOR, "main table")
                              if t.find_element(By.TAG_NAME, "caption").text == "Shards"]
                    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                            for table in tables[:1] for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
                except StaleElementReferenceException:
                    return []

            await wait_until(lambda: _on(lambda: len(shard_rows()) == 2 and all(r[1] == "r1" for r in shard_rows())),
                             timeout=30)
            ages: set[str] = set()

            async def age_changed() -> bool:
                ages.update(row[4] for row in await _on(shard_rows))
                return len(ages) >= 2
            await wait_until(age_changed, timeout=30)
            await _on(lambda: _shot(driver, "mapping"))

            from selenium.webdriver.common.by import By  # noqa: PLC0415
            await _on(lambda: driver.find_element(By.ID, "toggle").click())

            def paused() -> bool:
                status = app.parts.mappings.status(MAPPING)
                return status is not None and status.state == "Disabled"
            await wait_until(paused, timeout=30)
            await wait_until(lambda: _on(lambda: "Resume" in _text(driver, "#toggle")), timeout=20)
            await _on(lambda: _shot(driver, "paused"))
        finally:
            feeding = False
            await feeder
            await _on(driver.quit)

        viewer = await _on(lambda: _browser(tmp_path / "viewer"))
        try:
            await _on(lambda: viewer.get(base))
            await wait_until(lambda: _on(lambda: "Sign in" in _text(viewer, "h1")), timeout=20)
            await _on(lambda: _sign_in(viewer, "viewer", "s3cret-viewer"))
            await wait_until(lambda: _on(lambda: MAPPING in _text(viewer, "main table")), timeout=20)
            await _on(lambda: viewer.get(f"{base}#/mapping/{MAPPING}"))
            await wait_until(lambda: _on(lambda: "Resume" in _text(viewer, "#toggle")), timeout=20)
            from selenium.webdriver.common.by import By  # noqa: PLC0415
            assert await _on(lambda: viewer.find_element(By.ID, "toggle").get_attribute("disabled")) is not None
            answer = await _on(lambda: viewer.execute_async_script("""
                const done = arguments[arguments.length - 1];
                fetch('/console/session').then(r => r.json()).then(s => fetch(
                    '/2015-03-31/event-source-mappings/""" + MAPPING + """', {method: 'PUT',
                    headers: {'Content-Type': 'application/json', 'X-Broker-Csrf': s.Csrf},
                    body: JSON.stringify({Enabled: true})})).then(r => done(r.status));"""))
            assert answer == 403, "the viewer's session may not update the mapping"
            no_csrf = await _on(lambda: viewer.execute_async_script("""
                const done = arguments[arguments.length - 1];
                fetch('/broker/v1/status').then(r => done(r.status));"""))
            assert no_csrf == 403, "a request with the session cookie but without the CSRF header is refused"
            await _on(lambda: _shot(viewer, "viewer"))
        finally:
            await _on(viewer.quit)
        status = app.parts.mappings.status(MAPPING)
        assert status is not None
        assert status.state == "Disabled", "the viewer's attempt changed nothing"
