"""Render a run report to PNG with headless Chromium and print the PNG's path.

    .venv/bin/python bench/report_screenshot.py WORKSPACE [--out FILE.png] [--width 1280] [--height 1800]

WORKSPACE may also be a report.html. Without report.html in the workspace, the report is written first
(`python -m readers.report`). Chromium runs with no network features and a fresh profile, so what the PNG shows is
what a reader gets offline.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome-headless-shell")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


def find_browser() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def report_html(target: Path) -> Path:
    """The report page for a workspace (written if missing) or the page itself."""
    if target.is_file() and target.suffix == ".html":
        return target.resolve()
    page = target / "report.html"
    if not page.is_file():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
        from readers.report import write_report

        page = write_report(target)
    return page.resolve()


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 1800, timeout_s: float = 120) -> Path:
    """Take the screenshot; raises with Chromium's own output when it fails."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(f"no Chromium found on PATH (tried {', '.join(BROWSERS)}); "
                                "apt-get install -y chromium")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="report-shot-") as profile:  # a fresh profile: no cached state
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={out}", page.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium exited {proc.returncode} without {out}:\n{proc.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("target", type=Path, help="a workspace folder or a report.html")
    p.add_argument("--out", type=Path, help="PNG path (default: report_screenshot.png beside the page)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=1800)
    args = p.parse_args(argv)
    page = report_html(args.target)
    out = screenshot(page, args.out or page.with_name("report_screenshot.png"), args.width, args.height)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
