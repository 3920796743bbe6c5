"""Fixtures for the report tests: synthetic studies (through Optuna's API, per docs/reference/storage.md) and
a real headless browser (Debian's chromium) driven over the DevTools protocol with a tiny stdlib
websocket client, so console errors are read with their level, not guessed from logs."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.synthetic import write_synthetic_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


# ------------------------------------------------------------------------------- studies
@pytest.fixture(scope="session")
def study_dir(tmp_path_factory) -> Path:
    """A 3-objective study in progress: every trial state, presets, budgets, stage profiles."""
    return write_synthetic_study(tmp_path_factory.mktemp("runs") / "three", n_trials=120, running=2, seed=1)


@pytest.fixture
def make_study(tmp_path):
    def make(name="run", **kw) -> Path:
        return write_synthetic_study(tmp_path / name, **kw)
    return make


# ------------------------------------------------------------------------------- browser
class _WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: masked text frames out, frames in."""

    def __init__(self, url: str, timeout: float = 60.0):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text: str) -> None:
        data = text.encode()
        header = bytes([0x81])
        n = len(data)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0x9, 0xA):  # ping / pong: nothing to keep
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class PageResult:
    console_errors: list = field(default_factory=list)  # console.error / assert messages
    exceptions: list = field(default_factory=list)      # uncaught exceptions
    log_errors: list = field(default_factory=list)      # browser log entries at level error
    plots: list = field(default_factory=list)           # per plot div: id, rendered, svg/canvas counts
    page_errors: list = field(default_factory=list)     # what the page's own error box collected
    body: dict = field(default_factory=dict)            # data-plots-total / data-plots-rendered
    text: str = ""                                      # document.body.innerText
    screenshot: Path | None = None
    network: list = field(default_factory=list)         # URLs requested other than the page itself


_PROBE = """(() => {
  const plots = Array.from(document.querySelectorAll('div.plot[data-fig]')).map(d => ({
    id: d.id, rendered: d.getAttribute('data-rendered') === '1',
    mainSvg: d.querySelectorAll('svg.main-svg').length,
    svgShapes: d.querySelectorAll('svg.main-svg path, svg.main-svg text, svg.main-svg rect').length,
    canvas: d.querySelectorAll('canvas').length,
    points: d.querySelectorAll('.scatterlayer .point, .scatterlayer .trace path').length,
    traces: (d.data || []).length,
    top: d.getBoundingClientRect().top + window.scrollY, left: d.getBoundingClientRect().left,
    width: d.getBoundingClientRect().width, height: d.getBoundingClientRect().height}));
  const errs = Array.from(document.querySelectorAll('#report-errors li')).map(li => li.textContent);
  return JSON.stringify({plots, errs, body: {total: document.body.getAttribute('data-plots-total'),
      rendered: document.body.getAttribute('data-plots-rendered')}, text: document.body.innerText,
      height: document.documentElement.scrollHeight});
})()"""


class Browser:
    """Headless chromium on one page, driven over the DevTools protocol."""

    def __init__(self, width=1400, height=5000):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.log = Path(self.profile) / "stderr.log"
        # stderr to a file: a pipe nobody drains would fill and stall the browser
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
             "--hide-scrollbars", "--no-first-run", "--disable-extensions", "--disable-background-networking",
             f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self._log_file)
        deadline = time.time() + 60
        ws_url = None
        while time.time() < deadline and ws_url is None and self.proc.poll() is None:
            m = re.search(r"DevTools listening on (ws://\S+)", self.log.read_text(errors="replace"))
            if m:
                ws_url = m.group(1)
            else:
                time.sleep(0.1)
        if ws_url is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")
        port = int(re.match(r"ws://[^:]+:(\d+)/", ws_url).group(1))
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        page = next(p for p in pages if p.get("type") == "page")
        self.ws = _WebSocket(page["webSocketDebuggerUrl"])
        self.width, self.height = width, height
        self._id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 120.0, **params) -> dict:
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    def open(self, url: str, screenshot: Path | None = None, settle_s: float = 90.0) -> PageResult:
        self.events = []
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        deadline = time.time() + settle_s
        probe = {}
        while time.time() < deadline:
            value = self.call("Runtime.evaluate", expression=_PROBE, returnByValue=True)
            probe = json.loads(value["result"].get("value") or "{}")
            body = probe.get("body", {})
            if body.get("total") is not None and body.get("total") == body.get("rendered"):
                break
            if probe.get("errs"):
                break
            time.sleep(0.5)
        time.sleep(1.0)  # let late console messages arrive
        value = self.call("Runtime.evaluate", expression=_PROBE, returnByValue=True)
        probe = json.loads(value["result"].get("value") or "{}")
        result = PageResult(plots=probe.get("plots", []), page_errors=probe.get("errs", []),
                            body=probe.get("body", {}), text=probe.get("text", ""))
        if screenshot is not None:  # the whole page, not just the first screen
            height = min(int(probe.get("height") or self.height), 16000)
            self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=max(height, 600),
                      deviceScaleFactor=1, mobile=False)
            time.sleep(1.0)
            shot = self.call("Page.captureScreenshot", format="png")
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            result.screenshot = Path(screenshot)
        for ev in self.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                result.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                      for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                result.exceptions.append(d.get("exception", {}).get("description") or d.get("text"))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                result.log_errors.append(p["entry"].get("text"))
            elif m == "Network.requestWillBeSent":
                u = p.get("request", {}).get("url", "")
                if u != url and not u.startswith("data:"):
                    result.network.append(u)
        return result

    def evaluate(self, expression: str):
        """Run JavaScript in the page; return its (JSON-able) value."""
        value = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in value:
            raise RuntimeError(value["exceptionDetails"].get("text"))
        return value["result"].get("value")

    def close(self):
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install -y chromium)")
    b = Browser()
    try:
        yield b
    finally:
        b.close()
