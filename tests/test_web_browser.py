"""The web console in a real browser: Debian's chromium through chromedriver and Selenium.

`make test-browser` (marker `browser`, not in `make test`). Nothing is
downloaded: Selenium is pointed at /usr/bin/chromedriver and /usr/bin/chromium,
which the make target installs from Debian when run as root. Without them
these tests fail; they never skip.

Every page is also photographed at desktop and phone width into docs/web/
(the README shows them).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import pytest

from gateway.printing.emulator import Emulator
from tests.gatewayproc import ROOT
from tests.webtools import (
    PASSWORD,
    ROLES,
    query_all_csv,
    send_events,
    system_entries,
    web_gateway,
)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = ROOT / "docs" / "web"
DESKTOP = (1280, 900)
PHONE = (390, 844)  # a common phone's CSS pixels
WAIT_S = 30.0

HOSTILE = {
    "script": "<script>window.__pwned = 'script'</script>",
    "img": '"><img src=x onerror="window.__pwned=\'img\'">',
    "link": "javascript:window.__pwned='link'",
}


def _driver(download_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"
    assert os.path.exists(CHROMEDRIVER), (
        f"{CHROMEDRIVER} is missing: apt-get install chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(download_dir), "download.prompt_for_download": False},
    )
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    with Emulator(tmp / "paper") as emulator:
        gateway, base = web_gateway(
            tmp,
            printers={"counter": {"uri": f"socket://127.0.0.1:{emulator.port}"}},
            routes=[{"printer": "counter", "match": {"event_type": "receipt.print"}}],
        )
        try:
            events = [
                {
                    "event_type": "ticket.updated",
                    "action": "update",
                    "user_id": "42",
                    "username": "maria",
                    "object_type": "ticket",
                    "object_id": "T-7",
                    "old_value": {"status": "open", "owner": {"name": "a"}, "tags": ["x"]},
                    "new_value": {
                        "status": "closed",
                        "owner": {"name": "b"},
                        "tags": ["x", "y"],
                        "note": "done",
                    },
                },
                {
                    "event_type": HOSTILE["script"],
                    "action": HOSTILE["img"],
                    "username": HOSTILE["link"],
                    "object_type": "page",
                    "object_id": HOSTILE["img"],
                    "old_value": {"body": HOSTILE["script"]},
                    "new_value": {"body": HOSTILE["img"]},
                    "link": HOSTILE["link"],
                },
            ]
            events += [
                {
                    "event_type": "subscription.renewed",
                    "action": "renew",
                    "user_id": str(i),
                    "username": f"user{i % 5}",
                    "object_type": "subscription",
                    "object_id": f"S-{i}",
                }
                for i in range(120)
            ]
            # Printed on the counter printer (the route): its detail page shows the outcome.
            events.append(
                {"event_type": "receipt.print", "object_type": "sale", "object_id": "R-1"}
            )
            send_events(gateway, [json.dumps(e) for e in events])
            downloads = tmp / "downloads"
            downloads.mkdir()
            driver = _driver(downloads)
            try:
                yield {
                    "gateway": gateway,
                    "base": base,
                    "driver": driver,
                    "downloads": downloads,
                    "emulator": emulator,
                }
            finally:
                driver.quit()
        finally:
            gateway.stop()


def _wait(predicate, what: str, timeout: float = WAIT_S):
    """Poll `predicate` until truthy. An element that the page replaced or has not
    drawn yet (a live update, the page loading after a POST or its own 2-second
    reload) counts as not yet: the driver then raises a stale or missing element,
    or, when the document went away in the middle of the call, a bare
    WebDriverException ("Node with given id does not belong to the document").
    An error that lasts to the deadline is reported with it."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
        except WebDriverException as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last error: {last_error!r})")
        time.sleep(0.05)


def _login(site, role: str) -> None:
    from selenium.webdriver.common.by import By

    d = site["driver"]
    d.delete_all_cookies()
    d.get(site["base"] + "/")
    d.find_element(By.NAME, "name").send_keys(ROLES[role])
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form.login button").click()
    _wait(lambda: "Dashboard" in d.title, "the dashboard")
    _wait(lambda: f"({role})" in d.find_element(By.CSS_SELECTOR, "nav .who").text, "the account")


def _shot(site, name: str) -> None:
    d = site["driver"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, (w, h) in (("desktop", DESKTOP), ("phone", PHONE)):
        d.set_window_size(w, h)
        d.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
    d.set_window_size(*DESKTOP)


def _not_pwned(site) -> None:
    assert site["driver"].execute_script("return window.__pwned === undefined")


def test_login_form_and_each_role(site):
    from selenium.webdriver.common.by import By

    d = site["driver"]
    d.delete_all_cookies()
    d.get(site["base"] + "/")
    assert d.find_element(By.NAME, "password")
    _shot(site, "login")
    d.find_element(By.NAME, "name").send_keys("audrey")
    d.find_element(By.NAME, "password").send_keys("wrong password!")
    d.find_element(By.CSS_SELECTOR, "form.login button").click()
    _wait(lambda: "Wrong name or password" in d.page_source, "the refusal")
    for role in ROLES:
        _login(site, role)
    text = d.find_element(By.ID, "figures").text
    assert "Health" in text and "ok" in text and "Ledger head seq" in text
    _shot(site, "dashboard")


def test_dashboard_updates_without_reload(site):
    from selenium.webdriver.common.by import By

    d = site["driver"]
    _login(site, "auditor")
    cell = d.find_element(By.CSS_SELECTOR, '[data-live="head_seq"]')
    before = int(cell.text)
    send_events(site["gateway"], [json.dumps({"event_type": "live.check"})])
    _wait(lambda: int(cell.text) > before, "the live update of the head seq", 20)


def test_filter_the_table_and_open_a_detail_with_its_diff(site):
    from selenium.webdriver.common.by import By

    d = site["driver"]
    _login(site, "auditor")
    d.get(site["base"] + "/audit")
    _shot(site, "audit")
    field = d.find_element(By.NAME, "username")
    field.send_keys("user3")
    d.find_element(By.CSS_SELECTOR, "form.filters button").click()
    # The URL changes before the new page's body is drawn: wait for the body.
    _wait(lambda: "username=user3" in d.current_url, "the filtered table")
    _wait(lambda: "showing 1-24 of 24" in d.find_element(By.ID, "shown").text, "the count")
    rows = d.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
    assert len(rows) == 24 and all("user3" in r.text for r in rows)
    d.get(site["base"] + "/audit?object_id=T-7")
    d.find_element(By.CSS_SELECTOR, "#audit tbody tr td a").click()
    _wait(lambda: "Entry" in d.title, "the detail view")
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#diff tbody tr"), "the diff")
    diff = {
        tuple(c.text for c in r.find_elements(By.TAG_NAME, "td"))[:2]
        for r in d.find_elements(By.CSS_SELECTOR, "#diff tbody tr")
    }
    assert diff == {
        ("changed", "status"),
        ("changed", "owner.name"),
        ("added", "tags[1]"),
        ("added", "note"),
    }
    assert "ok: its stored bytes" in d.find_element(By.ID, "fields").text
    _shot(site, "detail")


def test_a_detail_shows_its_print_outcomes(site):
    from selenium.webdriver.common.by import By

    d = site["driver"]
    _login(site, "auditor")
    d.get(site["base"] + "/audit?object_id=R-1")
    d.find_element(By.CSS_SELECTOR, "#audit tbody tr td a").click()
    _wait(lambda: "Entry" in d.title, "the detail view")
    # The receipt's `print` entry follows once the printer has taken it: reload until then.
    rows = _wait(
        lambda: (d.refresh(), d.find_elements(By.CSS_SELECTOR, "#outcomes tbody tr"))[1],
        "the print outcome",
    )
    cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
    assert cells[2:5] == ["counter", "receipt", "printed"], cells
    assert len(rows) == 1
    # An entry nothing printed says so.
    d.get(site["base"] + "/audit?object_id=T-7")
    d.find_element(By.CSS_SELECTOR, "#audit tbody tr td a").click()
    _wait(lambda: "Entry" in d.title, "the detail view")
    assert "No print entry names this entry" in d.find_element(By.ID, "outcomes").text


def test_hostile_values_are_shown_as_text_and_never_run(site):
    from selenium.webdriver.common.by import By

    d = site["driver"]
    _login(site, "auditor")
    d.get(site["base"] + "/audit?object_type=page")
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#audit tbody tr"), "the row")
    table = d.find_element(By.ID, "audit").text
    assert HOSTILE["script"] in table and HOSTILE["img"] in table and HOSTILE["link"] in table
    _not_pwned(site)
    assert not d.find_elements(By.CSS_SELECTOR, "#audit img")
    d.find_element(By.CSS_SELECTOR, "#audit tbody tr td a").click()
    _wait(lambda: "Entry" in d.title, "the detail view")
    _wait(lambda: HOSTILE["script"] in d.find_element(By.TAG_NAME, "main").text, "the detail")
    _not_pwned(site)
    page = d.find_element(By.TAG_NAME, "main")
    assert HOSTILE["link"] in page.text and HOSTILE["script"] in page.text
    assert not page.find_elements(By.TAG_NAME, "img")
    assert not [
        a
        for a in page.find_elements(By.TAG_NAME, "a")
        if (a.get_attribute("href") or "").startswith("javascript")
    ]
    # Even a script the page itself did not write is refused by the CSP.
    d.execute_script(
        "var s = document.createElement('script'); s.textContent = \"window.__pwned='csp'\";"
        "document.body.appendChild(s);"
    )
    _not_pwned(site)


def test_csv_download_has_every_row(site):
    from selenium.webdriver.common.by import By

    d = site["driver"]
    _login(site, "auditor")
    d.get(site["base"] + "/audit?event_type=subscription.renewed")
    d.find_element(By.LINK_TEXT, "Export CSV").click()
    done = _wait(
        lambda: [p for p in site["downloads"].glob("*.csv") if p.stat().st_size],
        "the CSV download",
    )
    rows = list(csv.reader(io.StringIO(done[0].read_text(encoding="utf-8"))))
    expected = query_all_csv(site["gateway"], "--event-type", "subscription.renewed")
    assert len(rows) == len(list(csv.reader(io.StringIO("\n".join(expected))))) == 121
    assert "UTC" in done[0].name


def test_verify_runs_to_its_result(site):
    from selenium.webdriver.common.by import By

    d = site["driver"]
    _login(site, "auditor")
    d.get(site["base"] + "/verify")
    d.find_element(By.ID, "verify-start").click()
    _wait(lambda: "ok:" in d.find_element(By.ID, "verify-state").text, "the verification")
    bar = d.find_element(By.ID, "verify-progress")
    assert bar.tag_name == "progress"
    assert bar.get_attribute("value") == "100" and bar.get_attribute("max") == "100"
    assert d.find_element(By.ID, "verify-percent").text == "100 %"
    assert d.find_element(By.LINK_TEXT, "Verification statement (HTML)")
    _shot(site, "verify")


def test_test_page_as_operator_and_refused_as_auditor(site):
    from selenium.webdriver.common.by import By

    d = site["driver"]
    emulator = site["emulator"]
    before = len(emulator.jobs())
    _login(site, "auditor")
    d.get(site["base"] + "/printers")
    assert not d.find_elements(By.XPATH, "//button[text()='Print test page']")
    # A forged form from an auditor's own page: refused by role, not only hidden.
    token = d.find_element(By.NAME, "csrf").get_attribute("value")
    d.execute_script(
        "var f = document.createElement('form'); f.method = 'post';"
        "f.action = '/printers/test-page';"
        "for (var [k, v] of [['csrf', arguments[0]], ['printer', 'counter']]) {"
        " var i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v;"
        " f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();",
        token,
    )
    _wait(lambda: "Refused" in d.title, "the refusal")
    assert "operator or admin" in d.page_source
    _login(site, "operator")
    d.get(site["base"] + "/printers")
    _shot(site, "printers")
    d.find_element(By.XPATH, "//button[text()='Print test page']").click()
    _wait(lambda: d.find_elements(By.ID, "printer-message"), "the message")
    assert "queued" in d.find_element(By.ID, "printer-message").text
    jobs = emulator.wait_jobs(before + 1, WAIT_S)
    assert len(jobs) == before + 1 and b"STATUS" in jobs[-1].upper()


def test_daily_report_made_and_listed_as_operator(site):
    import datetime as dt

    from selenium.webdriver.common.by import By

    d = site["driver"]
    emulator = site["emulator"]
    before = len(emulator.jobs())
    _login(site, "operator")
    d.get(site["base"] + "/reports")
    day = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    d.find_element(By.CSS_SELECTOR, "form[action='/reports/print'] input[name='date']").send_keys(
        day
    )
    d.find_element(By.XPATH, "//button[text()='Make and print the report of this day']").click()
    _wait(lambda: d.find_elements(By.ID, "report-message"), "the message")
    assert "Report number 1" in d.find_element(By.ID, "report-message").text
    jobs = emulator.wait_jobs(before + 1, WAIT_S)
    assert len(jobs) == before + 1
    _wait(
        lambda: (d.refresh(), d.find_elements(By.CSS_SELECTOR, "#reports tbody tr"))[1],
        "the report in the list",
    )
    row = d.find_element(By.CSS_SELECTOR, "#reports tbody tr").text
    assert day in row and "web:otto" in row
    _shot(site, "reports")


def test_admin_adds_an_operator_who_logs_in_then_removes_them(site):
    from selenium.webdriver.common.by import By

    d = site["driver"]
    _login(site, "operator")
    d.get(site["base"] + "/accounts")
    assert "Refused" in d.title  # 403 for anyone but an admin
    _login(site, "admin")
    d.find_element(By.LINK_TEXT, "Accounts").click()
    _wait(lambda: "Accounts" in d.title, "the accounts page")
    form = d.find_element(By.ID, "account-add")
    form.find_element(By.NAME, "name").send_keys("olga")
    form.find_element(By.CSS_SELECTOR, "select[name=role] option[value=operator]").click()
    form.find_element(By.NAME, "password").send_keys(PASSWORD)
    form.find_element(By.NAME, "password2").send_keys(PASSWORD)
    form.find_element(By.CSS_SELECTOR, "button").click()
    _wait(lambda: "olga" in d.find_element(By.ID, "account-message").text, "the account added")
    row = d.find_element(By.CSS_SELECTOR, "tr[data-account=olga]")
    assert "operator" in row.text
    _shot(site, "accounts")
    admin = d.get_cookie("gw_session")
    # olga logs in with the password the admin gave her.
    d.delete_all_cookies()
    d.get(site["base"] + "/")
    d.find_element(By.NAME, "name").send_keys("olga")
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form.login button").click()
    _wait(lambda: "(operator)" in d.find_element(By.CSS_SELECTOR, "nav .who").text, "olga")
    olga = d.get_cookie("gw_session")
    # The admin removes her ...
    d.delete_all_cookies()
    d.add_cookie({"name": "gw_session", "value": admin["value"], "path": "/"})
    _wait(
        lambda: (
            d.get(site["base"] + "/accounts"),
            "from 127.0.0.1"
            in d.find_element(By.CSS_SELECTOR, "tr[data-account=olga] .login").text,
        )[1],
        "olga's last login on the accounts page",
    )
    row = d.find_element(By.CSS_SELECTOR, "tr[data-account=olga]")
    row.find_element(By.CSS_SELECTOR, "form[action='/accounts/remove'] button").click()
    _wait(lambda: "session" in d.find_element(By.ID, "account-message").text, "the removal")
    assert not d.find_elements(By.CSS_SELECTOR, "tr[data-account=olga]")
    # ... and her session has ended: her cookie gets the login form.
    d.delete_all_cookies()
    d.add_cookie({"name": "gw_session", "value": olga["value"], "path": "/"})
    d.get(site["base"] + "/")
    assert d.find_elements(By.CSS_SELECTOR, "form.login")
    assert not d.find_elements(By.CSS_SELECTOR, "nav .who")

    def recorded() -> list:
        return [
            (e["detail"]["action"], e["detail"]["account"])
            for e in system_entries(site["gateway"], "web_account")
            if e["detail"]["name"] == "olga"
        ]

    _wait(lambda: len(recorded()) == 2, "the changes in the ledger")
    assert recorded() == [("add", ROLES["admin"]), ("remove", ROLES["admin"])]
