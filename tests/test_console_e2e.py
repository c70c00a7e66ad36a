"""The admin console end to end in a real headless browser (issue 19): Debian's chromium driven
by Playwright, against ``synchub web`` started here on the synced demo store.

A steward logs in, merges a possible duplicate and splits it again, picks a value of a field
conflict, bulk-dismisses the rest from the keyboard, sees a rejected row with where and why,
is refused the users page, and a POST without the CSRF token is refused; an admin with German
as language sees the German console. Screenshots of the main pages go to
``test-output/console/<store>/`` (``SYNCHUB_TEST_OUTPUT`` to put them elsewhere). Runs on the
SQLite and the PostgreSQL store.

The browser must be there: ``.ci/run`` installs Debian's ``chromium`` package and fails, not
skips, when it cannot (``SYNCHUB_REQUIRE_BROWSER=1``); elsewhere the test is skipped without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, web_server

PASSWORD = "a long enough password"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT_ROOT = Path(os.environ.get("SYNCHUB_TEST_OUTPUT", ROOT / "test-output")) / "console"


def _browser_or_skip() -> None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing = "the playwright package"
    else:
        missing = "" if os.path.exists(CHROMIUM) else f"Debian's chromium ({CHROMIUM})"
    if missing:
        if os.environ.get("SYNCHUB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but {missing} is missing")
        pytest.skip(f"{missing} is not installed")


@pytest.fixture
def console(demo_dir: Path, store_url: str) -> Iterator[str]:
    _browser_or_skip()
    env = {**os.environ, "SYNCHUB_STORE": store_url}
    cfg = str(demo_dir / "config" / "demo.yaml")
    with open(cfg, "a", encoding="utf-8") as fh:  # erasure needs the suppression list's salt
        fh.write("\nprivacy: {salt: console-test-salt-0123456789}\n")
    cli = [sys.executable, "-m", "synchub.cli", "--config", cfg]
    subprocess.run([*cli, "sync"], env=env, capture_output=True)  # partial on purpose: three broken rows
    for name, role, language in (("steffi", "steward", "en"), ("root", "admin", "de"), ("mara", "marketing", "en")):
        subprocess.run([*cli, "users", "add", name, "--role", role, "--language", language, "--password-stdin"],
                       input=PASSWORD + "\n", text=True, env=env, check=True, capture_output=True)
    with web_server(cfg, env, ready="/") as base:
        yield base


def _log_in(page, base: str, name: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/#/login")
    page.fill("#login-name", name)
    page.fill("#login-password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector(f"#who:has-text('{name} (')")  # this user's session, not the previous one's


def test_the_console_in_a_real_browser(console: str, store_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    OUTPUT = OUTPUT_ROOT / store_url.split(":")[0].split("+")[0]  # sqlite/ and postgresql/
    OUTPUT.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(locale="en-GB")
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        _log_in(page, console, "steffi")
        rows = page.locator("#queue tbody tr")
        expect(rows).to_have_count(4)  # the demo's open conflicts
        page.screenshot(path=str(OUTPUT / "review-queue.png"), full_page=True)

        # Merge the possible duplicate from its side-by-side page, then split it again.
        dup = page.locator("#queue tbody tr", has_text="possible duplicate").first
        dup.locator("a").click()
        expect(page.locator("h2", has_text="Match evidence")).to_be_visible()
        expect(page.locator("#compare th", has_text="first_name")).to_be_visible()  # both customers' fields
        page.screenshot(path=str(OUTPUT / "possible-duplicate.png"), full_page=True)
        customer_link = page.locator(".side a").first.get_attribute("href")
        page.click("#merge")
        expect(page.locator("#flash")).to_contain_text("Done")
        expect(page.locator("#queue tbody tr", has_text="possible duplicate")).to_have_count(0)
        page.goto(f"{console}/{customer_link}")
        expect(page.locator("#consent tbody tr").first).to_be_visible()  # consent per channel, with its source
        expect(page.locator("#sources button.split-out")).to_have_count(page.locator("#sources tbody tr").count())
        page.click("#split")
        expect(page.locator("#flash")).to_contain_text("Done:")
        page.screenshot(path=str(OUTPUT / "customer.png"), full_page=True)

        # Pick a value of a field conflict.
        page.goto(f"{console}/#/review?kind=field")
        expect(rows.first).to_be_visible()
        before = rows.count()
        rows.first.locator("a").click()
        page.screenshot(path=str(OUTPUT / "field-conflict.png"), full_page=True)
        # (an opt-in cannot be picked by an admin: it must come from the person)
        page.locator("tbody tr").filter(has_not_text='"subscribed"').locator("button.pick").first.click()
        expect(page.locator("#flash")).to_contain_text("Done")
        page.goto(f"{console}/#/review?kind=field")
        expect(rows).to_have_count(before - 1)

        # Bulk-dismiss every open item from the keyboard: x selects, j moves, d dismisses.
        page.goto(f"{console}/#/review")
        expect(rows.first).to_be_visible()
        left = rows.count()
        page.locator("h1").click()
        for _ in range(left):
            page.keyboard.press("x")
            page.keyboard.press("j")
        page.keyboard.press("d")
        expect(page.locator("#flash")).to_contain_text(f"Done: {left}")
        expect(page.locator("main")).to_contain_text("Nothing here.")

        # A rejected row of the demo's partial run: where and why.
        page.goto(f"{console}/#/runs")
        page.locator("tr", has_text="partial").first.locator("a").click()
        expect(page.locator("#rejected tbody tr").first).to_be_visible()
        assert ":" in page.locator("#rejected tbody tr td").first.inner_text()  # file:line
        page.screenshot(path=str(OUTPUT / "run-rejected.png"), full_page=True)
        page.goto(f"{console}/#/runs")
        expect(page.locator("button.run-again").first).to_be_visible()

        # A steward is refused the admin page, and a POST without the CSRF token.
        page.goto(f"{console}/#/users")
        expect(page.locator("#denied")).to_be_visible()
        status = page.evaluate("""() => fetch('/api/v1/decisions', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                        body: JSON.stringify({ids: [1], action: 'dismiss'})}).then(r => r.status)""")
        assert status == 403

        # An admin whose language is German sees the German console.
        page.click("#logout")
        _log_in(page, console, "root")
        expect(page.locator("nav")).to_contain_text("Prüfen")
        page.goto(f"{console}/#/users")
        expect(page.locator("main")).to_contain_text("steffi")
        page.fill("#new-name", "vera")
        page.fill("#new-password", PASSWORD)
        page.select_option("#new-role", "viewer")
        page.click("#add-user")
        vera = page.locator("#users tr[data-name=vera]")
        expect(vera).to_contain_text("aktiv")
        vera.locator("button.toggle-user").click()
        expect(page.locator("#users tr[data-name=vera]")).to_contain_text("gesperrt")
        page.screenshot(path=str(OUTPUT / "users-de.png"), full_page=True)

        # The admin exports a person's data and erases them (after the browser's confirmation).
        anna = page.evaluate("() => fetch('/api/v1/customers?q=Leitner').then(r => r.json()).then(h => h[0].id)")
        page.goto(f"{console}/#/customer/{anna}")
        expect(page.locator("#privacy")).to_be_visible()
        with page.expect_download() as download:
            page.click("#export-json")
        assert '"source_records"' in Path(download.value.path()).read_text(encoding="utf-8")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#erase")
        expect(page.locator("#flash")).to_contain_text("Gelöscht; Quittungen")
        expect(page.locator("#flash")).to_contain_text("shop/customers manual")
        gone = page.evaluate(f"() => fetch('/api/v1/customers/{anna}').then(r => r.status)")
        assert gone == 404

        # Marketing: segment sizes and the re-opt-in list as a CSV download; no decisions.
        page.click("#logout")
        _log_in(page, console, "mara")
        page.goto(f"{console}/#/lists")
        expect(page.locator("#segments tbody tr")).to_have_count(1)
        page.screenshot(path=str(OUTPUT / "lists.png"), full_page=True)
        with page.expect_download() as download:
            page.click("#reoptin-csv")
        assert download.value.suggested_filename == "reoptin.csv"
        with page.expect_download() as download:
            page.click("#segments-csv")
        assert Path(download.value.path()).read_text(encoding="utf-8-sig").startswith("connection;stream;entity;members")
        # The data-quality report opens in its own tab: figures and plots, no script.
        with page.context.expect_page() as tab:
            page.click("#quality")
        report = tab.value
        report.wait_for_load_state()
        expect(report.locator("h1")).to_contain_text("quality")
        assert report.locator("svg").count() >= 5 and report.locator("script").count() == 0
        report.screenshot(path=str(OUTPUT / "quality-report.png"), full_page=True)
        report.close()
        page.screenshot(path=str(OUTPUT / "lists.png"), full_page=True)
        page.goto(f"{console}/#/review")
        expect(page.locator("main h1")).to_have_text("Review queue")
        assert page.locator("#bulk-dismiss").count() == 0  # no decisions for marketing
        browser.close()
    # The refused requests above and the erased customer's 404 are the only failed loads (the
    # browser logs each one).
    assert [e for e in errors if "status of 403" not in e and "status of 404" not in e] == [], errors
    assert sum("status of 404" in e for e in errors) == 1, errors
