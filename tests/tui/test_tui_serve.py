"""`gsvinspect serve`: the app process of a browser session ends when the browser leaves and when
the server stops, gracefully or not (issue 13 point 16).

Real processes on 127.0.0.1: a textual-serve server started by `gsvinspect serve`, a websocket
client standing in for the browser, and the app under textual-serve's web driver.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from test_tui_support import PAIRS, demo_files

pytest.importorskip("textual_serve")
aiohttp = pytest.importorskip("aiohttp")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_files(tmp_path_factory.getbasetemp() / "tui-demo")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _ends(pid: int, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app_env() -> dict:
    return dict(os.environ, TEXTUAL_DRIVER="textual.drivers.web_driver:WebDriver", COLUMNS="80", ROWS="24")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("how", ["stdin EOF", "SIGTERM", "SIGINT"])
def test_served_app_process_ends(demo, how):
    """The app as textual-serve runs it (web driver, pipes) ends on each way a server says goodbye."""
    pre, ft = (demo[n] for n in PAIRS["sovits"])
    proc = subprocess.Popen([sys.executable, "-m", "gsvinspect", "open", str(pre), str(ft)], env=_app_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline() == b"__GANGLION__\n"        # the driver is up, statistics running
        proc.stdout.read(4096)
        time.sleep(0.3)
        if how == "stdin EOF":
            proc.stdin.close()
        else:
            proc.send_signal(getattr(signal, how))
        proc.stdout.close()
        assert _ends(proc.pid), f"the app kept running after {how}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def _browse(port: int, then):
    """Open a 'browser' websocket, wait for the app's first screen, then `then(ws)`; the app's pid."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws?width=80&height=24")
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        got = 0
        while True:  # until the app has painted and gone quiet (statistics done: nothing more to write)
            try:
                msg = await asyncio.wait_for(ws.receive(), 1.0 if got > 4000 else 30)
            except asyncio.TimeoutError:
                break
            assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), msg
            got += len(msg.data)
        return await then(ws)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_serve_session_ends_when_browser_leaves_and_when_server_dies(demo):
    pre, ft = (demo[n] for n in PAIRS["gpt"])
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "gsvinspect", "serve", str(pre), str(ft), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async def leave(ws):
            [app] = _children(server.pid)       # `exec`: the session's process is the app itself
            await ws.close()
            return app

        async def kill_server(ws):
            [app] = _children(server.pid)
            server.kill()                       # no goodbye: the app only sees its stdin end
            return app

        app = asyncio.run(_browse(port, leave))
        assert _ends(app), "the app kept running after the browser left"
        app = asyncio.run(_browse(port, kill_server))
        assert _ends(app), "the app kept running after its server died"
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
