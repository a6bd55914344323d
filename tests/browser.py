"""A real headless Chromium (Debian's ``chromium``) driven by Playwright for Python: the
system browser via ``executable_path``, so nothing is downloaded (Playwright's own browser
download is not needed, nor possible offline)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from sandbox import need


@contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator:
    exe = shutil.which("chromium")
    need(exe is not None, "chromium not installed (scripts/bootstrap-system installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
