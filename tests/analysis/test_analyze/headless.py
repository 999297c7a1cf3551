"""Headless Debian chromium for the report tests: load a page from disk, dump its DOM, take a
screenshot, and list every URL the page's network stack touched (from a netlog).

Chromium runs as root in CI, hence ``--no-sandbox``; every background service that would
reach the network by itself (component updates, sync, field trials) is switched off so
that any network request in the netlog comes from the page.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars",
         # Nothing resolves: a request that slips through fails fast instead of reaching the internet.
         "--host-resolver-rules=MAP * ~NOTFOUND"]
LOCAL_SCHEMES = ("file:", "data:", "about:", "chrome:", "chrome-error:", "devtools:")


def chromium() -> str:
    """The chromium binary; the test fails (not skips) without it: ``make test`` installs it."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("BATCHSAFE_NO_BROWSER"):
            pytest.skip("BATCHSAFE_NO_BROWSER is set")
        pytest.fail("chromium is not installed (make test installs it: make chromium)")
    return exe


def _run(args: list[str], tmp: Path, name: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{name}"
    netlog = tmp / f"netlog-{name}.json"
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}",
           "--net-log-capture-mode=Everything", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(url: str, tmp: Path, name: str = "dom") -> str:
    """The DOM after load (scripts run), as chromium's ``--dump-dom`` prints it."""
    p = _run(["--virtual-time-budget=5000", "--dump-dom", url], tmp, name)
    assert p.returncode == 0 and "<html" in p.stdout, p.stderr[-2000:]
    return p.stdout


def screenshot(url: str, tmp: Path, out: Path, size: str = "1280,2600") -> Path:
    """A PNG of the page at ``size``."""
    p = _run(["--virtual-time-budget=5000", f"--screenshot={out}", f"--window-size={size}", url], tmp, "shot")
    assert p.returncode == 0 and out.is_file(), p.stderr[-2000:]
    return out


def painted(png: Path) -> bool:
    """Whether a screenshot shows something (dark pixels), not a blank white page."""
    from PIL import Image

    with Image.open(png) as im:
        return im.convert("L").getextrema()[0] < 128


def network_urls(tmp: Path, name: str = "dom") -> list[str]:
    """URLs of the network requests that a page started in run ``name``, from its netlog.

    Chromium itself still fetches a few things however it is started (its clock, account
    list, component updates): those have the initiator "not an origin". A request that a
    page starts (an image, a script, a fetch) carries the page's origin ("null" for a
    file: page). Local schemes (file:, data:, ...) are not network requests.
    """
    raw = (tmp / f"netlog-{name}.json").read_text(encoding="utf-8", errors="replace").rstrip()
    # chromium may be stopped before it closes the JSON array; close it ourselves.
    try:
        log = json.loads(raw)
    except ValueError:
        log = json.loads(raw.rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = {e["params"]["url"] for e in log.get("events", []) if e.get("type") == start_job
            and isinstance(e.get("params"), dict) and "url" in e["params"]
            and e["params"].get("initiator") != "not an origin"}
    return sorted(u for u in urls if not u.startswith(LOCAL_SCHEMES))
