"""Look at the report as a person would: render report.html in headless Chromium and check the screenshot.

Optional (marker ``browser``; skipped when Chromium is absent): ``pytest -m browser``. Set PRIVTUNE_SCREENSHOT_DIR
to keep the screenshot for a human look.
"""

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from privtune.experiments.report import write_report
from privtune.experiments.store import ResultStore

from _exp_helpers import study_rows

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_report_renders_in_chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium)")
    with ResultStore(tmp_path) as s:
        s.put_study({"name": "browser", "toml": "name = 'browser'"})
        for r in study_rows():
            s.upsert(r)
    page = write_report(tmp_path).html_path
    shot = Path(os.environ.get("PRIVTUNE_SCREENSHOT_DIR", tmp_path)) / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp_path / 'ud'}",
           "--hide-scrollbars", "--window-size=1280,4200", f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    w, h = png_size(shot)
    assert (w, h) == (1280, 4200)
    # the page is not blank: a decent share of non-white pixels (figures, tables, text)
    from matplotlib import image

    img = image.imread(shot)
    ink = (img[..., :3].mean(axis=2) < 0.9).mean()
    assert ink > 0.03
