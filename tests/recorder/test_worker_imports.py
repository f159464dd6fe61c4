"""What a worker keeps out of its memory (issue 12 §4): httpx's command-line extras (click,
rich, pygments) are never loaded, and httpx still works without them; the allocator settings a
worker is started with, which a user's own value overrides."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pumpwatch.recorder.supervisor import WORKER_ENV_DEFAULTS, worker_env


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server calls it by this name
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_a_worker_keeps_httpx_cli_extras_out_and_httpx_still_fetches() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    code = (
        "import sys, asyncio\n"
        "from pumpwatch.recorder.worker import forbid_heavy_imports\n"
        "forbid_heavy_imports()\n"
        "import pumpwatch.recorder.history.live\n"  # what the worker loads for live repair
        "import httpx\n"
        "async def get():\n"
        "    async with httpx.AsyncClient() as c:\n"
        f"        return (await c.get({url!r})).json()\n"
        "print(asyncio.run(get()))\n"
        "print(sorted(m for m in ('click', 'rich', 'pygments') if m in sys.modules))\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["{'ok': True}", "[]"]


def test_worker_allocator_defaults_and_the_user_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in WORKER_ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    env = worker_env()
    assert env["MALLOC_ARENA_MAX"] == "1" and env["ARROW_DEFAULT_MEMORY_POOL"] == "system"
    assert env["MALLOC_TRIM_THRESHOLD_"] == env["MALLOC_MMAP_THRESHOLD_"] == "65536"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert worker_env()["MALLOC_ARENA_MAX"] == "4"
