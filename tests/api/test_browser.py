"""The chat page end to end in a real headless Chromium (Debian's, driven by Playwright; no
browser download): stream an answer from `hybrid serve` with the real models, see the strategy
badge and a citation, upload a document and find it by search. Saves docs/chat-page.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.api.conftest import KEY, ROOT_DIR, ServeProcess, fake_backend

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
LONG = 300_000  # ms: a CPU answer on a busy 2-core machine can take a while


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def open_page(browser, url):
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    ctx.add_init_script(f"localStorage.setItem('hybrid-key', {KEY!r})")
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_function("document.querySelectorAll('#app option').length > 0")
    return page, errors


def test_chat_page_real_server(browser, real_model_app, tmp_path):
    srv = ServeProcess([real_model_app]).wait_ready()
    try:
        page, errors = open_page(browser, srv.url)
        assert page.locator("#app option").all_inner_texts() == ["Vellmar Legal (test) (legal)"]
        page.fill("#question", "What is the most a landlord may take as a deposit?")
        page.click("#send")
        # streamed: text shows while the answer is still pending (before the final event)
        page.wait_for_function("(() => { const a = document.querySelector('.turn .a');"
                               " return a && a.classList.contains('pending') && a.textContent.length > 0; })()",
                               timeout=LONG)
        page.wait_for_function("document.querySelector('.turn .badge').textContent.length > 0", timeout=LONG)
        badge = page.inner_text(".turn .badge").strip().lower()
        assert badge in ("rag", "few_shot")
        assert page.inner_text(".turn .reason").strip()
        assert page.inner_text(".turn .a").strip()
        if badge == "rag":
            page.click(".turn .cites summary")  # expand the citations
            first = page.locator(".turn .cites li").first
            assert first.is_visible()
            assert first.locator(".src").inner_text() in ("tenancy-act.md", "notice.md")
            assert "deposit" in first.locator(".snip").inner_text().lower() or \
                "notice" in first.locator(".snip").inner_text().lower()

        doc = tmp_path / "pet-clause.md"
        doc.write_text("# Pet clause\n\nUnder the Wintermoor Pet Clause a tenant may keep one cat "
                       "with written consent from the landlord.\n")
        page.set_input_files("#files", str(doc))
        page.click("#uploadbtn")
        page.wait_for_selector("#jobs li.done, #jobs li.failed", timeout=LONG)
        assert "added (1 document(s))" in page.inner_text("#jobs li"), page.inner_text("#jobs li")
        hits = page.evaluate("""async (key) => {
            const r = await fetch('/v1/search?app=legal&q=Wintermoor%20pet%20clause%20cat',
                                  {headers: {Authorization: 'Bearer ' + key}});
            return (await r.json()).hits; }""", KEY)
        assert hits[0]["source"] == "pet-clause.md" and "Wintermoor" in hits[0]["text"]
        page.wait_for_function("document.querySelector('#appinfo').textContent.includes('3 chunks') || "
                               "document.querySelector('#appinfo').textContent.includes('chunks')")
        shot = ROOT_DIR / "docs" / "chat-page.png"
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert errors == []
    finally:
        srv.stop()


def test_model_output_is_text_and_strategy_override(browser, live):
    # The fake backend replies with markup: the page must show it as characters, never run it.
    evil = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\"> <b>bold?</b>"
    srv = live(fake_backend(reply=lambda q, hits: evil))
    page, errors = open_page(browser, srv.url)
    page.select_option("#strategy", "few_shot")
    page.fill("#question", "<i>hello</i>")
    page.click("#send")
    page.wait_for_function("document.querySelector('.turn .badge').textContent.length > 0", timeout=30_000)
    assert page.inner_text(".turn .a") == evil  # literally, tags and all
    assert page.inner_text(".turn .q") == "<i>hello</i>"
    assert page.evaluate("window.__xss") is None
    assert page.locator(".turn .a script, .turn .a img, .turn .a b").count() == 0
    assert page.inner_text(".turn .badge").strip().lower() == "few_shot"
    assert "forced" in page.inner_text(".turn .reason")
    assert errors == []


def test_page_asks_for_the_key(browser, live):
    sync_api = pytest.importorskip("playwright.sync_api")
    srv = live()
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(srv.url + "/")
    page.wait_for_function("document.querySelector('#status').textContent.includes('API key')")
    assert page.locator("#keybox").get_attribute("open") is not None
    page.fill("#key", KEY)
    page.dispatch_event("#key", "change")
    page.wait_for_function("document.querySelectorAll('#app option').length == 2")
    sync_api.expect(page.locator("#status")).to_have_text("ready")
