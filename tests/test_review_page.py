"""The /review page in headless Chromium against a live server: sign in, see the drawn pairs, confirm and reject."""

import io
import re
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from skimage import data

from copyscope.jobs.serve import create_app
from copyscope.pipeline.bank_engine import BankEngine
from copyscope.pipeline.bank_store import Actor

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make install installs Debian's)")
MARKUP_ID = "<b>post-2</b>"  # shown as text, never as markup


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A live server on a free loopback port -> (base URL, engine, curator key, {external_id: match_id})."""
    engine = BankEngine.open(tmp_path_factory.mktemp("review") / "data")
    key = engine.store.create_key(Actor("cli", "admin"), "alice", "curator")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(engine), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
            assert api.post("/v1/banks", json={"name": "known"}).status_code == 201
            for name in ("astronaut", "coffee", "chelsea"):
                png = _encoded(getattr(data, name)(), "PNG")
                added = api.post("/v1/banks/known/items", files={"image": ("x.png", png)}, data={"content_id": name})
                assert added.status_code == 201
            queries = {"post-1": data.astronaut()[40:420, 60:460], MARKUP_ID: np.ascontiguousarray(data.chelsea()[20:280, 420:30:-1])}
            ids = {}
            for external_id, query in queries.items():
                record = api.post("/v1/match", files={"image": ("q.jpg", _encoded(query, "JPEG", quality=70))},
                                  data={"external_id": external_id}).json()
                assert record["decision"] == "match", record
                ids[external_id] = record["match_id"]
        yield base, engine, key, ids
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    yield page
    context.close()
    assert not errors, errors


def _drawn(card) -> None:
    """Wait until the card's pair drawing has loaded (a blob URL fetched with the key)."""
    image = card.get_by_role("img")
    image.scroll_into_view_if_needed()
    expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    image.wait_for(state="visible")
    assert image.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0


def test_sign_in_review_and_sign_out(service, page, tmp_path):
    base, _, key, ids = service
    page.goto(base + "/review")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text="refused")).to_be_visible()

    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status")).to_have_text("2 decisions waiting for review.")
    first = page.get_by_role("article", name="post-1")
    second = page.get_by_role("article", name=MARKUP_ID)
    expect(first).to_contain_text("matched by alice")
    expect(first.get_by_role("region", name="known / astronaut")).to_contain_text("inliers of")
    expect(second.get_by_role("heading", name=MARKUP_ID)).to_have_text(MARKUP_ID)
    assert second.locator("b").count() == 0
    _drawn(first)
    _drawn(second)
    shot = tmp_path / "review.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=shot, full_page=True)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[1] == 1200 and pixels.shape[0] > 1000
    assert pixels.std() > 30  # the drawings and text, not a blank page

    first.get_by_label("Note").fill("same photo, cropped")
    first.get_by_role("button", name="Confirm").click()
    expect(first).to_contain_text("Confirmed by alice")
    expect(first).to_contain_text("“same photo, cropped”")
    second.get_by_role("button", name="Reject").click()
    expect(second).to_contain_text("Rejected by alice")
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
        for external_id, verdict, note in (("post-1", "confirmed", "same photo, cropped"),
                                           (MARKUP_ID, "rejected", "")):
            reviews = api.get(f"/v1/matches/{ids[external_id]}").json()["reviews"]
            assert [(r["verdict"], r["key"], r["note"], r["bank"]) for r in reviews] == [(verdict, "alice", note,
                                                                                          "known")]

    page.reload()  # the key stays in the tab; reviewed decisions leave the queue
    expect(page.get_by_text("Nothing waiting for review.")).to_be_visible()
    page.get_by_label("Show reviewed decisions too").check()
    expect(page.get_by_role("status")).to_have_text("2 recent decisions.")
    expect(page.get_by_role("article", name="post-1")).to_contain_text("Confirmed by alice")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_revoked_key_returns_to_sign_in(service, page):
    base, engine, _, _ = service
    key = engine.store.create_key(Actor("cli", "admin"), "bob", "curator")
    page.goto(base + "/review")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Refresh")).to_be_visible()
    engine.store.revoke_key(Actor("cli", "admin"), "bob")
    page.get_by_role("button", name="Refresh").click()
    expect(page.get_by_role("alert").filter(has_text="refused")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
