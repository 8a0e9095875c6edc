"""Open an ``hcd report`` page in headless Chromium and check that it is whole and self-contained.

Checks: every section id of ``hcd_kit.report.SECTION_IDS`` is in the page; every ``<img>`` has loaded
(``complete`` with ``naturalWidth > 0``) from a ``data:`` URI; the browser requested nothing but the file itself
(any other request is blocked and counted). Prints sections, images, bytes and render time (navigation start to
the load event); takes a full-page screenshot with ``--screenshot``. Exit 1 when a check fails, 2 when no
browser can be driven.

Uses Playwright (``pip install playwright``) with a system Chromium (Debian: ``apt-get install chromium``), since
Playwright's own browser download is not needed::

    python benchmarks/report_browser.py --report runs/r18/report.html --screenshot /tmp/report.png
    python benchmarks/report_browser.py --report runs/r18/report.html --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
PAGE_FACTS = """(ids) => {
  const imgs = [...document.images];
  return {
    missing: ids.filter((id) => !document.getElementById(id)),
    images: imgs.length,
    broken: imgs.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.alt || i.src.slice(0, 60)),
    not_data: imgs.filter((i) => !i.src.startsWith("data:")).map((i) => i.src.slice(0, 120)),
    scripts: document.scripts.length,
    height: document.documentElement.scrollHeight,
    load_ms: (() => { const n = performance.getEntriesByType("navigation")[0];
                      return n ? n.loadEventEnd - n.startTime : null; })(),
  };
}"""


def find_browser(explicit: str | None) -> str | None:
    for candidate in (explicit, CHROMIUM, shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def check(report: Path, screenshot: Path | None, browser: str, sections: list[str], timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    url = report.resolve().as_uri()
    requests: list[str] = []
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=browser, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            context = chromium.new_context(viewport={"width": 1280, "height": 900}, offline=True)
            page = context.new_page()

            def gate(route) -> None:  # the page itself and data: URIs only; anything else is counted and blocked
                if route.request.url == url or route.request.url.startswith("data:"):
                    route.continue_()
                else:
                    requests.append(route.request.url)
                    route.abort()

            page.route("**/*", gate)
            page.on(
                "request",
                lambda r: (
                    None if (r.url == url or r.url.startswith("data:") or r.url in requests) else requests.append(r.url)
                ),
            )
            t0 = time.perf_counter()
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            wall_ms = (time.perf_counter() - t0) * 1000
            facts = page.evaluate(PAGE_FACTS, sections)
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            version = chromium.version
        finally:
            chromium.close()
    failures = []
    if facts["missing"]:
        failures.append(f"section id(s) missing: {', '.join(facts['missing'])}")
    if facts["broken"]:
        failures.append(f"{len(facts['broken'])} image(s) did not load, e.g. {facts['broken'][0]}")
    if facts["not_data"]:
        failures.append(f"{len(facts['not_data'])} image(s) not inline, e.g. {facts['not_data'][0]}")
    if requests:
        failures.append(f"{len(requests)} network request(s) besides the file, e.g. {requests[0]}")
    return {
        "report": str(report),
        "browser": f"chromium {version}",
        "bytes": report.stat().st_size,
        "sections": len(sections) - len(facts["missing"]),
        "sections_expected": len(sections),
        "images": facts["images"],
        "images_loaded": facts["images"] - len(facts["broken"]),
        "external_requests": len(requests),
        "scripts": facts["scripts"],
        "page_height_px": facts["height"],
        "render_ms": round(facts["load_ms"] if facts["load_ms"] is not None else wall_ms, 1),
        "goto_ms": round(wall_ms, 1),
        "screenshot": None if screenshot is None else str(screenshot),
        "ok": not failures,
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", type=Path, required=True, help="the HTML file `hcd report` wrote")
    ap.add_argument("--screenshot", type=Path, help="write a full-page PNG screenshot here")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--browser", help=f"Chromium executable (default {CHROMIUM}, else chromium on PATH)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the page to load")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report} not found", file=sys.stderr)
        return 1
    browser = find_browser(args.browser)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("error: playwright is not installed (pip install playwright)", file=sys.stderr)
        return 2
    if browser is None:
        print(f"error: no Chromium at {CHROMIUM} or on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    from hcd_kit.report import SECTION_IDS

    res = check(args.report, args.screenshot, browser, list(SECTION_IDS), args.timeout)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['browser']}: {args.report}")
        print(
            f"sections {res['sections']}/{res['sections_expected']}  images {res['images_loaded']}/{res['images']} "
            f"loaded  external requests {res['external_requests']}  bytes {res['bytes']:,}  "
            f"render {res['render_ms']:.0f} ms  page {res['page_height_px']:,} px tall"
        )
        if res["screenshot"]:
            print(f"screenshot: {res['screenshot']}")
        for line in res["failures"]:
            print(f"FAIL: {line}")
        print("OK" if res["ok"] else "FAILED")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
