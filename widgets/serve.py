"""The explorer app served by Voilà on 127.0.0.1, as ``make run`` serves it: for the browser test and the screenshot
script, which drive it in Debian's Chromium.

    with served_app(open("voila.log", "w")) as url:
        ...  # open url in a browser
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "explorer.ipynb"
# Debian's Chromium without the network chatter it tries when nothing can be reached (Playwright never downloads one)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, server: subprocess.Popen, log_name: str, timeout: float = 60.0) -> None:
    """Until the server's port accepts connections; a server that exits or takes too long is an error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {port} did not start: see {log_name}") from None
            time.sleep(0.2)


@contextmanager
def served_app(log, env: dict | None = None, start_timeout: float = 60.0, notebook=NOTEBOOK):
    """Serve the app (or another ``notebook``) until the block ends; yields its URL once the port accepts
    connections (a GET would start a kernel). ``log``: an open file for Voilà's output; ``env``: extra environment
    variables."""
    port = free_port()
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    server = subprocess.Popen([sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}",
                               "--Voila.ip=127.0.0.1"], cwd=ROOT, env=environment, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, server, log.name, start_timeout)
        yield f"http://127.0.0.1:{port}/"
    finally:  # by PID: Voilà's kernels stop with it
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
