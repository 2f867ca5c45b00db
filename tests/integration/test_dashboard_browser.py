"""The ops dashboard in a real headless Chromium (Debian's chromium, driven by selenium and
chromedriver; no browser download): sign in, see Telegram go degraded while its API fails,
pause it, replay a dead letter, and keep a screenshot under the test's output."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import GatewayProcess, PgDatabase, wait_for
from tests.integration.test_browser import _browser

TOKEN = "ops-dashboard-token"
EVIL = '<script>document.title="pwned"</script>'


def until(driver: WebDriver, check: Callable[[], bool], what: str, within: float = 60) -> None:
    """Reload the page until ``check`` holds (the dashboard is server-rendered)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        driver.refresh()


def landed(driver: WebDriver, marker: str) -> None:
    """Wait until the form's POST-redirect-GET has arrived at the page it leads to."""
    WebDriverWait(driver, 30).until(lambda d: marker in d.current_url
                                    and d.find_elements(By.ID, "flash"))


def state_of(driver: WebDriver, name: str) -> str:
    return str(driver.find_element(By.ID, f"connector-{name}").get_attribute("data-state"))


def drive(url: str, fail_telegram: Callable[[], None], screenshot: Path) -> dict[str, str]:
    driver = _browser()
    seen: dict[str, str] = {}
    try:
        driver.get(f"{url}/ops?lang=en")
        assert driver.current_url.startswith(f"{url}/ops/login")  # no session: sign in first
        driver.find_element(By.ID, "token").send_keys("wrong")
        driver.find_element(By.ID, "login").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "wrong-token"))
        seen["wrong"] = driver.find_element(By.ID, "wrong-token").text
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "login").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "channels"))
        driver.get(f"{url}/ops?lang=en&refresh=0")
        seen["heading"] = driver.find_element(By.CSS_SELECTOR, "#channels h2").text
        until(driver, lambda: state_of(driver, "telegram") == "running", "telegram running")

        fail_telegram()
        until(driver, lambda: state_of(driver, "telegram") == "degraded", "telegram degraded")
        seen["degraded_error"] = driver.find_element(
            By.CSS_SELECTOR, "#connector-telegram .err").text
        alert_rows = "#alerts tr.alert-connector_degraded"
        until(driver, lambda: bool(driver.find_elements(By.CSS_SELECTOR, alert_rows)),
              "the degraded alert on the dashboard")
        seen["alert"] = driver.find_element(By.CSS_SELECTOR, alert_rows).text
        driver.find_element(By.ID, "pause-telegram").click()
        landed(driver, "done=pause")
        seen["after_pause"] = state_of(driver, "telegram")
        seen["flash_pause"] = driver.find_element(By.ID, "flash").text

        row = driver.find_element(By.ID, "dl-tg-dead-ui")
        seen["reason"] = row.find_element(By.CLASS_NAME, "reason").text
        seen["scripts_in_table"] = str(len(driver.find_elements(
            By.CSS_SELECTOR, "#dead-letters script")))
        driver.find_element(By.ID, "replay-tg-dead-ui").click()
        landed(driver, "done=replayed")
        seen["flash_replay"] = driver.find_element(By.ID, "flash").text
        seen["replay_result"] = driver.find_element(
            By.CSS_SELECTOR, "#dl-tg-dead-ui .result").text
        seen["title"] = driver.title
        driver.save_screenshot(str(screenshot))
        driver.get(f"{url}/ops?lang=id&refresh=0")
        seen["heading_id"] = driver.find_element(By.CSS_SELECTOR, "#channels h2").text
        return seen
    finally:
        driver.quit()


async def test_operator_pauses_a_degraded_channel_and_replays_a_dead_letter(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str], bot_api: TelegramEmulator,
) -> None:
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url, "LAPOR_GATEWAY__OPS_TOKEN": TOKEN,
           "LAPOR_CONNECTORS__TELEGRAM__ENABLED": "true",
           "LAPOR_CONNECTORS__TELEGRAM__MODE": "polling",
           "LAPOR_CONNECTORS__TELEGRAM__TOKEN": bot_api.token,
           "LAPOR_CONNECTORS__TELEGRAM__API_BASE": bot_api.url,
           "LAPOR_CONNECTORS__TELEGRAM__POLL_TIMEOUT_S": "1",
           "LAPOR_OPS__ALERT_INTERVAL_S": "0.5"}
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    update = {"update_id": 4242, "message": bot_api.message(
        "Jembatan kayu di Loa Janan rapuh, mohon diperbaiki.")}
    await pg.fetch(
        "INSERT INTO dead_letters (id, channel, account, reason, payload, content_type,"
        " created_us) VALUES ('tg-dead-ui', 'telegram', 'lapor_bot', $1, $2,"
        " 'application/json', $3)",
        f"handler crashed on {EVIL}", json.dumps(update).encode(), int(time.time() * 1e6))
    loop = asyncio.get_running_loop()

    def fail_telegram() -> None:  # the emulator lives on the test's event loop
        loop.call_soon_threadsafe(lambda: bot_api.fail("getUpdates", 502, times=8))

    screenshot = tmp_path / "ops-dashboard.png"
    try:
        seen = await asyncio.to_thread(drive, gateway.url, fail_telegram, screenshot)
        assert seen["wrong"] == "Wrong token."
        assert seen["heading"] == "Channels" and seen["heading_id"] == "Kanal"
        assert "502" in seen["degraded_error"] or "Bad Gateway" in seen["degraded_error"]
        assert seen["after_pause"] == "paused"
        assert seen["flash_pause"] == "Connector paused: telegram"
        assert "connector telegram degraded" in seen["alert"]
        assert seen["reason"] == f"handler crashed on {EVIL}"  # shown as text, not run
        assert seen["scripts_in_table"] == "0" and seen["title"] != "pwned"
        assert seen["flash_replay"] == "Dead letter replayed: tg-dead-ui"
        assert seen["replay_result"].startswith("accepted ")
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        code = seen["replay_result"].split()[1]

        async def stored() -> list[object]:
            return list(await pg.fetch("SELECT 1 FROM complaints WHERE tracking_code = $1",
                                       code))

        await wait_for(stored, within=30, what="the replayed complaint in the central store")
        rows = await pg.fetch("SELECT paused FROM connector_control WHERE name = 'telegram'")
        assert [r[0] for r in rows] == [1]
    finally:
        assert gateway.terminate() == 0, gateway.log()
