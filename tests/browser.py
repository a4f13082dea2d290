"""Open a local HTML page in a real headless Chromium (Debian's package) with the network cut off."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@dataclass
class PageVisit:
    headings: list[str]
    images: int
    broken_images: list[str]
    external_requests: list[str] = field(default_factory=list)
    svgs: int = 0
    errors: list[str] = field(default_factory=list)


@contextmanager
def offline_page(page_path: Path) -> Iterator[tuple]:
    """A headless Chromium page showing ``page_path`` from file://, every other request blocked.

    Yields (page, external requests, page errors); the lists fill as the page runs.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it)")
    from playwright.sync_api import sync_playwright

    external: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def route(r):
            if r.request.url.startswith(("file://", "data:", "about:")):
                r.continue_()
            else:
                external.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        try:
            yield page, external, errors
        finally:
            browser.close()


def visit(page_path: Path, screenshot: Path, wait_for: str | None = None) -> PageVisit:
    """Load ``page_path`` from file://, block and record every request that is not a local file."""
    with offline_page(page_path) as (page, external, errors):
        if wait_for:
            page.wait_for_selector(wait_for, timeout=20_000)
        broken = page.eval_on_selector_all(
            "img",
            "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.getAttribute('src'))",
        )
        visit = PageVisit(
            headings=page.eval_on_selector_all("h1, h2", "els => els.map(e => e.textContent.trim())"),
            images=page.eval_on_selector_all("img", "els => els.length"),
            broken_images=broken,
            external_requests=external,
            svgs=page.eval_on_selector_all("svg", "els => els.length"),
            errors=errors,
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return visit
