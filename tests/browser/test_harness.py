"""The browser harness itself: what later browser tests rely on, proven on a real Chromium."""
from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.browser import BrowserError

STORE = """<!doctype html><title>store</title><h1>store</h1>
<script>
function db() {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open('harness', 1);
    open.onupgradeneeded = () => open.result.createObjectStore('kv');
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
}
async function put(key, value) {
  const tx = (await db()).transaction('kv', 'readwrite');
  tx.objectStore('kv').put(value, key);
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve(null);
    tx.onerror = () => reject(tx.error);
  });
}
async function get(key) {
  const request = (await db()).transaction('kv').objectStore('kv').get(key);
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result ?? null);
    request.onerror = () => reject(request.error);
  });
}
</script>"""


def test_storage_survives_a_reload_and_is_shared_by_tabs(browser, page_server):
    """Offline-first code keeps its queue in IndexedDB: it must outlive a reload and be one store
    for every tab, and a tab waiting on another must not stall the bridge."""
    server = page_server({"/": STORE})
    first = browser.new_page(server.url())
    first.evaluate("put('clip', {id: 7, parts: [1, 2]})")
    first.reload()
    assert first.evaluate("get('clip')") == {"id": 7, "parts": [1, 2]}
    assert first.text("h1") == "store"

    second = browser.new_page(server.url())
    assert second.evaluate("get('clip')") == {"id": 7, "parts": [1, 2]}

    # the first tab waits for the second (a pending evaluate); the bridge keeps answering meanwhile
    first.evaluate("window.channel = new BroadcastChannel('h'), "
                   "window.heard = new Promise(r => { channel.onmessage = e => r(e.data) }), null")
    with ThreadPoolExecutor(1) as pool:
        heard = pool.submit(first.evaluate, "window.heard")
        second.evaluate("new BroadcastChannel('h').postMessage('from the second tab')")
        assert heard.result(30) == "from the second tab"
    assert first.console() == [] and second.console() == []
    first.close()
    second.close()


def test_offline_screenshot_and_errors(browser, page_server, tmp_path):
    """Going offline must fail requests even to loopback and fire the events apps listen to; a JS
    exception comes back as BrowserError with its message and the page's console."""
    server = page_server({"/": "<!doctype html><title>t</title><h1>Spotter harness</h1><p>a screenshot of this</p>"})
    page = browser.new_page(server.url())
    page.evaluate("window.wentOffline = new Promise(r => addEventListener('offline', r, {once: true})), null")
    fetch = "fetch('/').then(r => r.status, e => e.name)"
    try:
        browser.set_offline(True)
        assert page.evaluate("window.wentOffline.then(() => navigator.onLine)") is False
        assert page.evaluate(fetch) == "TypeError"
    finally:
        browser.set_offline(False)
    assert page.evaluate(fetch) == 200
    assert page.evaluate("navigator.onLine") is True

    shot = tmp_path / "page.png"
    page.screenshot(shot)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000, len(png)
    assert struct.unpack(">II", png[16:24]) == (1280, 720)  # IHDR: Playwright's default viewport

    page.evaluate("console.warn('about to fail')")
    with pytest.raises(BrowserError) as raised:
        page.evaluate("(() => { throw new RangeError('no such clip') })()")
    assert "RangeError: no such clip" in str(raised.value) and "warning: about to fail" in str(raised.value)
    page.close()
