"""The page in a real browser: Debian's chromium, headless, driven by selenium through the
system chromedriver. One annotator rates with the keyboard, another with the mouse; the test
then reads the database rows. Skipped with the reason when chromium or selenium is missing."""

import shutil
import time

import pytest

from feedalign.serve.app import create_app
from feedalign.serve.storage import FeedbackStore
from feedalign.serve.validation import left_side
from serve_fixtures import live_server, make_items

CHROMIUM, DRIVER = "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
OBJECTIVES = ("helpful", "concise")


def _browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    if not shutil.os.path.exists(CHROMIUM) or not shutil.os.path.exists(DRIVER):
        pytest.skip("Debian chromium/chromium-driver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _wait(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_rate_with_keyboard_and_mouse(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    store = FeedbackStore(tmp_path / "fb.db")
    store.add_items(make_items(n_pairs=2, n_single=1))
    driver = _browser(tmp_path)
    try:
        with live_server(create_app(store, OBJECTIVES)) as base:
            # Keyboard: type the annotator id, Enter; item p0: left better, tie; Enter.
            driver.get(base + "/")
            driver.find_element(By.ID, "annotator").send_keys("kb_user" + Keys.ENTER)
            _wait(lambda: driver.find_element(By.ID, "prompt").text == "prompt 0")
            body = driver.find_element(By.TAG_NAME, "body")
            body.send_keys("1")
            body.send_keys("t")
            body.send_keys(Keys.ENTER)
            _wait(lambda: driver.find_element(By.ID, "prompt").text == "prompt 1")
            # item p1: right better (arrow key), both bad; a comment; Ctrl+Enter from the box.
            body.send_keys(Keys.ARROW_RIGHT)
            body.send_keys("x")
            body.send_keys("c")
            driver.switch_to.active_element.send_keys("too long")
            driver.switch_to.active_element.send_keys(Keys.CONTROL, Keys.ENTER)
            _wait(lambda: driver.find_element(By.ID, "prompt").text == "single prompt 0")
            body.send_keys("u")  # helpful: thumbs up; concise left unrated
            body.send_keys(Keys.ENTER)
            _wait(lambda: driver.find_element(By.ID, "done").is_displayed())
            assert "3 / 3" in driver.find_element(By.ID, "progress").text

            # Mouse: another annotator via the URL; click buttons and Submit (twice: a double click).
            driver.get(base + "/?annotator=mouse_user")
            _wait(lambda: driver.find_element(By.ID, "prompt").text == "prompt 0")
            driver.find_element(By.CSS_SELECTOR, "button[data-objective=helpful][data-value=right]").click()
            driver.find_element(By.CSS_SELECTOR, "button[data-objective=concise][data-value=left]").click()
            submit = driver.find_element(By.ID, "submit")
            driver.execute_script("arguments[0].click(); arguments[0].click();", submit)
            _wait(lambda: driver.find_element(By.ID, "prompt").text == "prompt 1")
    finally:
        driver.quit()

    rows = list(store.rating_rows())
    got = {(r["annotator"], r["item_id"], r["objective"]): r for r in rows}
    assert len(rows) == 7  # 2 + 2 + 1 (keyboard) + 2 (mouse), the double click stored once
    l0, l1 = left_side("kb_user", "p0"), left_side("kb_user", "p1")
    assert got[("kb_user", "p0", "helpful")]["value"] == l0
    assert got[("kb_user", "p0", "concise")]["value"] == "tie"
    assert got[("kb_user", "p1", "helpful")]["value"] == ("b" if l1 == "a" else "a")
    assert got[("kb_user", "p1", "concise")]["value"] == "both_bad"
    assert got[("kb_user", "p1", "concise")]["comment"] == "too long"
    assert got[("kb_user", "s0", "helpful")]["value"] == "up"
    assert ("kb_user", "s0", "concise") not in got
    m0 = left_side("mouse_user", "p0")
    assert got[("mouse_user", "p0", "helpful")]["value"] == ("b" if m0 == "a" else "a")
    assert got[("mouse_user", "p0", "concise")]["value"] == m0
    assert {r["left_side"] for r in rows if r["item_id"] == "p0"} <= {"a", "b"}
    assert store.counts()["submissions"] == 4
    store.close()
