"""Headless Chromium on a page served from localhost, and npm's onnxruntime-web cached for it.

`ort_web_dist()` installs onnxruntime-web (ORT_WEB_VERSION, exact) with npm into the tests' cache once per machine
(a lock file makes pytest-xdist workers install it once between them). `PageServer` serves a folder, with
onnxruntime-web's dist/ under /ort/, and records what the page POSTs back. `open_page` runs Debian's chromium on a
URL until the page has posted (or the time is up) and ends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest

from tests.support.tinymodel import _build_into, _cache_root

ORT_WEB_VERSION = "1.30.0"
CHROMIUM = Path("/usr/bin/chromium")
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync")


def ort_web_dist() -> Path:
    """onnxruntime-web's dist/ folder, installed with npm into the cache on first use."""
    final = _cache_root() / "npm" / f"onnxruntime-web-{ORT_WEB_VERSION}"
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.is_dir():
        _build_into(final, _npm_install)
    return final / "node_modules" / "onnxruntime-web" / "dist"


def _npm_install(staging: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: install Node.js and npm (apt-get install -y npm) to fetch onnxruntime-web.")
    subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix",
                    str(staging), f"onnxruntime-web@{ORT_WEB_VERSION}"], check=True, capture_output=True, timeout=300)


class _Handler(SimpleHTTPRequestHandler):
    """Files of the folder; /ort/... from onnxruntime-web's dist; POST bodies go to the server's queue."""

    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm", ".mjs": "text/javascript",
        ".js": "text/javascript", ".json": "application/json"}

    def __init__(self, *args: Any, folder: Path, ort: Path, posted: queue.Queue, **kwargs: Any) -> None:
        self._ort = ort
        self._posted = posted
        super().__init__(*args, directory=str(folder), **kwargs)

    def translate_path(self, path: str) -> str:
        if path.startswith("/ort/"):
            return str(self._ort / path.removeprefix("/ort/").split("?", 1)[0])
        return super().translate_path(path)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._posted.put(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PageServer:
    """A folder served on 127.0.0.1 in a thread, onnxruntime-web under /ort/, POSTed JSON in `posted`."""

    def __init__(self, folder: Path, ort: Path) -> None:
        self.posted: queue.Queue[Any] = queue.Queue()
        handler = partial(_Handler, folder=folder, ort=ort, posted=self.posted)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@contextlib.contextmanager
def chromium(url: str) -> Iterator[subprocess.Popen]:
    """Debian's chromium, headless, on `url`, ended when the block ends.

    Without chromium the test is skipped with the command that installs it (the README's test command works on a
    fresh machine), or fails where MODELBAY_TEST_REQUIRE_BROWSER=1 says it must run (`.ci/run` installs it and sets
    that).
    """
    if not CHROMIUM.is_file():
        why = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to run the browser test."
        if os.environ.get("MODELBAY_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    with tempfile.TemporaryDirectory(prefix="modelbay-chromium-") as profile:
        process = subprocess.Popen([str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", url],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def open_page(server: PageServer, query: str, timeout: float = 120.0) -> Any:
    """Open the served page with `query` in headless chromium and return the JSON it POSTs back."""
    with chromium(server.url + "index.html?" + query) as process:
        try:
            return server.posted.get(timeout=timeout)
        except queue.Empty:
            process.terminate()
            _, errors = process.communicate(timeout=10)
            pytest.fail(f"the page posted nothing within {timeout:g} s; chromium said: "
                        f"{errors.decode(errors='replace')[-2000:]}")
