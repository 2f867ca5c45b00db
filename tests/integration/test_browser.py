"""The complaint form in a real headless Chromium: fill it in, attach a photo, submit."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.support import PNG, GatewayProcess, PgDatabase, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1024,1400"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _appears(driver: webdriver.Chrome, element_id: str, within: float = 20) -> str:
    """The element's text once the page that shows it has loaded (a POST under load can take
    a while: never read the page that is being left)."""
    def shown(_: object) -> str:
        found = driver.find_elements(By.ID, element_id)
        return str(found[0].text) if found else ""

    return str(WebDriverWait(driver, within, ignored_exceptions=(
        StaleElementReferenceException,)).until(shown))


def _fill_and_submit(url: str, photo: Path, screenshot: Path) -> tuple[str, str, str]:
    driver = _browser()
    try:
        driver.get(f"{url}/")
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "id"
        # Submitting an empty form keeps the citizen on the form with reasons in Indonesian.
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        errors = _appears(driver, "err-isi")
        driver.find_element(By.ID, "judul").send_keys("Banjir di Jl. Antasari")
        driver.find_element(By.ID, "isi").send_keys(
            "Air setinggi lutut sejak subuh, saluran air tersumbat sampah. <b>Tolong</b>!")
        driver.find_element(By.ID, "lokasi").send_keys("Jl. Antasari, Samarinda Ulu")
        driver.find_element(By.ID, "nama").send_keys("Rina")
        driver.find_element(By.ID, "kontak").send_keys("rina@example.id")
        driver.find_element(By.ID, "lampiran").send_keys(str(photo))
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        code = _appears(driver, "kode-pelacakan")
        driver.save_screenshot(str(screenshot))
        driver.find_element(By.LINK_TEXT, "halaman status").click()
        status = _appears(driver, "status")
        return errors, code, status
    finally:
        driver.quit()


async def test_citizen_submits_the_form_in_a_browser(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str]
) -> None:
    gateway = GatewayProcess(tmp_path / "gw", {**kafka_env, "LAPOR_STORE__URL": pg.url})
    await gateway.start()
    photo = tmp_path / "banjir.png"
    photo.write_bytes(PNG)
    try:
        errors, code, status = await asyncio.to_thread(
            _fill_and_submit, gateway.url, photo, tmp_path / "confirmation.png")
        assert errors == "Isi laporan wajib diisi."
        assert len(code) == 11 and code[5] == "-"
        assert status.startswith("Diterima")

        async def stored() -> list[object]:
            return list(await pg.fetch("SELECT payload FROM complaints WHERE tracking_code = $1",
                                       code))

        rows = await wait_for(stored, within=20, what="the browser's complaint in the store")
        payload = json.loads(str(rows[0][0]))  # type: ignore[index]
        assert payload["body"].endswith("<b>Tolong</b>!")  # kept as written, escaped on pages
        assert payload["reporter"]["email"] == "rina@example.id"
        assert payload["attachments"][0]["name"] == "banjir.png"
    finally:
        assert gateway.terminate() == 0, gateway.log()
