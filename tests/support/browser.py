"""Headless Chromium for tests, driven through Playwright by tests/browser/bridge.mjs, so a test can
run the real frontend's JavaScript (IndexedDB, offline, reloads, several tabs) against real servers."""
from __future__ import annotations

import collections
import itertools
import json
import mimetypes
import os
import shutil
import subprocess
import threading
from concurrent.futures import Future, TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BRIDGE_DIR = REPO / "tests" / "browser"
CHROMIUM = os.environ.get("SPOTTER_CHROMIUM", "/usr/bin/chromium")


class BrowserError(Exception):
    """A JS exception, a timeout, or the bridge/Chromium failing; the message says which."""


class Browser:
    """One Chromium (one profile) for the whole session; its pages are tabs of that profile."""

    def __init__(self, start_timeout_s: float = 60):
        node = shutil.which("node")
        if node is None:
            raise BrowserError("node is not installed: the browser tests need Node >= 20 (see bin/bootstrap)")
        if not os.access(CHROMIUM, os.X_OK):
            raise BrowserError(f"{CHROMIUM} is missing: run bin/bootstrap (installs Debian's chromium)")
        if not (BRIDGE_DIR / "node_modules" / "playwright-core").is_dir():
            raise BrowserError("tests/browser/node_modules/playwright-core is missing: run bin/bootstrap "
                               "(npm ci --prefix tests/browser)")
        self._ids = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._dead: str | None = None  # why the bridge can no longer answer
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._proc = subprocess.Popen([node, str(BRIDGE_DIR / "bridge.mjs")], cwd=BRIDGE_DIR,
                                      env={**os.environ, "SPOTTER_CHROMIUM": CHROMIUM},
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        threading.Thread(target=self._read_answers, name="browser-bridge-out", daemon=True).start()
        threading.Thread(target=self._read_stderr, name="browser-bridge-err", daemon=True).start()
        try:
            self.version = self.call("version", timeout_s=start_timeout_s)  # fails here if Chromium cannot start
        except BrowserError:
            self.close()
            raise

    def new_page(self, url: str) -> "Page":
        return Page(self, self.call("newPage", url=url))

    def set_offline(self, offline: bool) -> None:
        """The whole context: requests fail, pages see navigator.onLine and offline/online events."""
        self.call("setOffline", offline=offline)

    def close(self) -> None:
        if self._proc.poll() is None and self._dead is None:
            try:
                self.call("shutdown", timeout_s=10)
            except BrowserError:
                pass
        try:
            self._proc.stdin.close()  # the bridge also shuts down on end of input
        except OSError:
            pass
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def call(self, cmd: str, timeout_s: float = 30, **args):
        """Send one bridge command and wait for its answer; BrowserError on an error answer or timeout."""
        request_id, future = next(self._ids), Future()
        line = json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n"
        with self._lock:
            if self._dead is not None:
                raise BrowserError(self._dead)
            self._pending[request_id] = future
            try:
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()
            except OSError as exc:
                del self._pending[request_id]
                raise BrowserError(f"the browser bridge is not reading commands ({exc}){self._stderr_tail()}")
        try:
            answer = future.result(timeout_s)
        except FutureTimeout:
            with self._lock:
                self._pending.pop(request_id, None)  # a late answer is dropped
            raise BrowserError(f"{cmd}: no answer within {timeout_s} s") from None
        if not answer["ok"]:
            raise BrowserError(answer["error"])
        return answer["value"]

    def _read_answers(self) -> None:
        for raw in self._proc.stdout:
            try:
                answer = json.loads(raw)
            except ValueError:
                self._stderr.append(f"(not an answer on stdout) {raw.decode(errors='replace').rstrip()}")
                continue
            with self._lock:
                future = self._pending.pop(answer.get("id"), None)
            if future is not None:  # None: its caller timed out and gave up
                future.set_result(answer)
        code = self._proc.wait()
        with self._lock:
            self._dead = f"the browser bridge exited (code {code}){self._stderr_tail()}"
            waiting, self._pending = self._pending, {}
        for future in waiting.values():
            future.set_exception(BrowserError(self._dead))

    def _read_stderr(self) -> None:
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    def _stderr_tail(self) -> str:
        lines = list(self._stderr)
        return "; its stderr ends:\n" + "\n".join(lines) if lines else "; nothing on its stderr"


class Page:
    """One tab. Values cross as JSON: what `evaluate` returns must be JSON-serialisable."""

    def __init__(self, browser: Browser, page_id: str):
        self.browser, self.page_id = browser, page_id

    def evaluate(self, expression: str, timeout_s: float = 30):
        """The value of a JS expression in the page (a promise is awaited); undefined is None.
        A JS exception or a timeout raises BrowserError with the page's console so far."""
        try:
            return self.browser.call("evaluate", timeout_s=timeout_s, pageId=self.page_id, expression=expression)
        except BrowserError as exc:
            raise BrowserError(f"{exc}\n--- console of {self.page_id} ---\n{self._console_or_why()}") from None

    def goto(self, url: str) -> None:
        self.browser.call("goto", pageId=self.page_id, url=url)

    def reload(self) -> None:
        self.browser.call("reload", pageId=self.page_id)

    def screenshot(self, path) -> None:
        self.browser.call("screenshot", pageId=self.page_id, path=str(path))

    def text(self, selector: str, timeout_s: float = 10) -> str:
        """innerText of the first element matching `selector`, waiting up to timeout_s for one."""
        return self.browser.call("text", timeout_s=timeout_s + 5, pageId=self.page_id, selector=selector,
                                 timeoutMs=int(timeout_s * 1000))

    def console(self) -> list[str]:
        """Console messages and uncaught errors so far, as "type: text"."""
        return self.browser.call("console", pageId=self.page_id)

    def close(self) -> None:
        self.browser.call("closePage", pageId=self.page_id)

    def _console_or_why(self) -> str:
        try:
            return "\n".join(self.console()) or "(empty)"
        except BrowserError as exc:
            return f"(unavailable: {exc})"


class PageServer:
    """Serves given pages on http://127.0.0.1:<free port> from a thread (stdlib http.server), so a
    page has a real origin (IndexedDB needs one). `pages` maps a path to its text; the type comes
    from the path's extension (HTML when it has none). The dict is read per request: a test may
    change it to serve a new version."""

    def __init__(self, pages: dict[str, str]):
        self.pages = pages
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _page_handler(self))
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="page-server", daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return self.origin + path

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _page_handler(server: PageServer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            text = server.pages.get(path)
            if text is None and path == "/favicon.ico":
                text = ""  # no 404 in the console for the icon every page asks for
            if text is None:
                self.send_error(404)
                return
            body = text.encode()
            content_type = mimetypes.guess_type(path)[0] or "text/html"
            self.send_response(200)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler
