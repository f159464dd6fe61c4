"""The report page in a real browser: headless Chromium driven over its DevTools protocol
(127.0.0.1 only) loads index.html from disk with no console error, no exception and no request
other than file:// and data:, shows every listing and every image, and sorts the overview when
a header is clicked. A full-page screenshot is kept under the pytest tmp dir (path printed).

Chromium is Debian's `chromium` package, installed by scripts/setup.sh; without it the test is
skipped with that reason.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from pumpwatch.detector.report import write_report

# Headless, no sandbox (root in containers), nothing of Chromium's own talking to the network,
# DevTools on a free port of 127.0.0.1 only (written to <profile>/DevToolsActivePort).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)  # fmt: skip


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One page target over the DevTools protocol: commands, and every event kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg:
                fut = self.pending.pop(msg["id"])
                if "error" in msg:
                    fut.set_exception(RuntimeError(f"DevTools error: {msg['error']}"))
                else:
                    fut.set_result(msg.get("result", {}))
            else:
                self.events.append(msg)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[n] = fut
        await self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        return await asyncio.wait_for(fut, 30)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for_event(self, method: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for ev in self.events:
                if ev["method"] == method:
                    return ev
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {method} within {timeout_s} s")


@asynccontextmanager
async def chromium_page(binary: str) -> AsyncIterator[Page]:
    """A headless Chromium on a free 127.0.0.1 port, its first page target attached."""
    profile = Path(tempfile.mkdtemp(prefix="pumpwatch-chromium-"))
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise AssertionError(f"chromium did not start its DevTools endpoint: {err[-2000:]}")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        async with connect(
            f"ws://127.0.0.1:{port}{port_file.read_text().splitlines()[1]}", max_size=None
        ) as b:
            browser = Page(b)
            target = await browser.send("Target.createTarget", url="about:blank")
            targets = await browser.send("Target.getTargets")
            assert any(t["targetId"] == target["targetId"] for t in targets["targetInfos"])
        async with connect(f"ws://127.0.0.1:{port}/devtools/page/{target['targetId']}", max_size=None) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await page.send(f"{domain}.enable")
            yield page
            page.reader.cancel()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _inspect(index: Path, shot: Path) -> dict[str, Any]:
    binary = chromium_binary()
    assert binary is not None
    async with chromium_page(binary) as page:
        await page.send("Emulation.setDeviceMetricsOverride", width=1440, height=1000, deviceScaleFactor=1,
                        mobile=False)  # fmt: skip
        await page.send("Page.navigate", url=index.as_uri())
        await page.wait_for_event("Page.loadEventFired")
        out: dict[str, Any] = {}
        out["rows"] = await page.evaluate(
            "Array.from(document.querySelectorAll('#overview tbody tr')).map(r => r.dataset.listing)"
        )
        out["sections"] = await page.evaluate("document.querySelectorAll('section.listing').length")
        out["links_ok"] = await page.evaluate(
            "Array.from(document.querySelectorAll('#overview tbody a')).every("
            "a => document.getElementById(a.getAttribute('href').slice(1)) !== null)"
        )
        # Load the lazy charts too, then check every image decoded.
        out["images"] = await page.evaluate(
            "Promise.all(Array.from(document.images).map(i => { i.loading = 'eager'; return i.decode().then("
            "() => [i.getAttribute('src'), i.naturalWidth], () => [i.getAttribute('src'), 0]); }))"
        )
        heads = await page.evaluate(
            "Array.from(document.querySelectorAll('#overview th')).map(h => h.textContent)"
        )
        rise_col = heads.index("Max rise, %")
        click = f"document.querySelectorAll('#overview th')[{rise_col}].click()"
        order = "Array.from(document.querySelectorAll('#overview tbody tr')).map(r => r.dataset.listing)"
        await page.evaluate(click)
        out["rise_ascending"] = await page.evaluate(order)
        out["aria"] = await page.evaluate(f"document.querySelectorAll('#overview th')[{rise_col}].ariaSort")
        await page.evaluate(click)
        out["rise_descending"] = await page.evaluate(order)
        symbol_col = heads.index("Symbol")
        await page.evaluate(f"document.querySelectorAll('#overview th')[{symbol_col}].click()")
        out["by_symbol"] = await page.evaluate(order)
        await page.evaluate(
            "(() => { const f = document.getElementById('filter-text'); f.value = 'upbit';"
            " f.dispatchEvent(new Event('input')); })()"
        )
        out["filtered"] = await page.evaluate(
            "Array.from(document.querySelectorAll('#overview tbody tr')).filter(r => !r.hidden)"
            ".map(r => r.dataset.listing)"
        )
        await page.evaluate(
            "(() => { const f = document.getElementById('filter-text'); f.value = '';"
            " f.dispatchEvent(new Event('input')); window.scrollTo(0, 0); })()"
        )
        await asyncio.sleep(0.3)
        png = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        shot.write_bytes(base64.b64decode(png["data"]))
        out["events"] = page.events
    return out


@pytest.fixture(scope="module")
def report_dir(
    listings_store: tuple[Path, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root, _ = listings_store
    return write_report(root / "listings", tmp_path_factory.mktemp("page") / "report").out_dir


@pytest.mark.skipif(
    chromium_binary() is None, reason="chromium not installed (scripts/setup.sh installs it with apt-get)"
)
def test_page_in_headless_chromium(
    report_dir: Path, tmp_path_factory: pytest.TempPathFactory, record_property: Any
) -> None:
    shot = tmp_path_factory.mktemp("artefacts") / "report.png"
    seen = asyncio.run(_inspect(report_dir / "index.html", shot))
    print(f"\nreport screenshot: {shot}\nreport page: {report_dir / 'index.html'}")  # shown with -s or -rP
    record_property("screenshot", str(shot))
    study = orjson.loads((report_dir / "report.json").read_bytes())
    names = [lst["listing"] for lst in study["listings"]]

    # No console error, no uncaught exception, nothing but file:// and data: requested.
    problems = [
        ev for ev in seen["events"]
        if ev["method"] == "Runtime.exceptionThrown"
        or (ev["method"] == "Runtime.consoleAPICalled"
            and ev["params"]["type"] in ("error", "warning", "assert"))
        or (ev["method"] == "Log.entryAdded" and ev["params"]["entry"]["level"] in ("error", "warning"))
        or ev["method"] == "Network.loadingFailed"
    ]  # fmt: skip
    assert problems == []
    urls = [
        ev["params"]["request"]["url"] for ev in seen["events"] if ev["method"] == "Network.requestWillBeSent"
    ]
    assert urls, "the page and its images are requested"
    assert [u for u in urls if not u.startswith(("file://", "data:"))] == []

    # Every listing is shown, with its section, link target and images.
    assert seen["rows"] == names and len(names) == 4
    assert seen["sections"] == 4 and seen["links_ok"] is True
    images = dict(seen["images"])
    assert all(width > 0 for width in images.values()), images
    assert sum(1 for src in images if src.startswith("charts/")) == 4
    assert sum(1 for src in images if src.startswith("img/")) == 5

    # Sorting: by max rise (listings without a pump last either way), then by symbol.
    rise = {lst["listing"]: lst["max_rise_percent"] for lst in study["listings"]}
    pumped = [n for n in names if rise[n] is not None]
    blank = [n for n in names if rise[n] is None]
    assert seen["rise_ascending"] == sorted(pumped, key=lambda n: rise[n]) + blank
    assert seen["rise_descending"] == sorted(pumped, key=lambda n: -rise[n]) + blank
    assert seen["aria"] == "ascending"
    symbol = {lst["listing"]: lst["symbol"] for lst in study["listings"]}
    assert seen["by_symbol"] == sorted(names, key=lambda n: symbol[n])
    upbit = [n for n in seen["by_symbol"] if study["listings"][names.index(n)]["source"]["kind"] == "upbit"]
    assert seen["filtered"] == upbit and len(upbit) == 2
    assert shot.stat().st_size > 50_000
