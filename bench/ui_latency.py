"""UI latency in a real browser: Playwright drives Debian's chromium against a RUNNING app (`make run` or
`exemplar serve`) and times, per action, the wall time from the input (click / key) to the last change of the page
once Streamlit is idle again (no "running" indicator, no stale elements, 250 ms without DOM mutations).

Actions (the gallery of the demo's GradCAM ranking, the first screen):
  sort          Sort by AR ↔ AP               filter        Prediction all ↔ wrong
                (both timed from the click on the option; the dropdown is opened before the clock starts; the
                "Filter and display" panel, drawn only while open, is opened once before filter and opacity)
  next page     page number +1 / −1           opacity       map opacity slider one step
  open detail   a card's Detail option        G / B / U     mark good / mark bad / undo in the detail view
  page nav      sidebar Gallery → Annotations → Gallery (both, then each direction)
  reading       on the Reading page, a key 1–5 answers the item and the next item shows (goal, issue 25: median
                ≤ 1 s); a study of the demo's GradCAM run is created for --user first (an ordinal 1–5 question)
  cancel        an Occlusion explain job is started from the gallery; Cancel → the bar says "cancelled"
                (needs a worker; skipped otherwise)

Prints a table of median and 95th percentile per action (goal, issue 16: gallery actions median ≤ 0.5 s and
p95 ≤ 1 s; Cancel → "cancelled" ≤ 2 s) and writes JSON with --json. Nothing is asserted: this is a bench.

Usage: python bench/ui_latency.py [--url http://127.0.0.1:8501] [--repeats 5] [--actions sort,filter,...]
       [--user bench] [--chromium /usr/bin/chromium] [--width 1280] [--cpu-slowdown 2.5] [--json OUT]
(--cpu-slowdown: the browser's CPU slowed N times, a slower reader's machine measured on a fast one)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.browser.harness import CHROMIUM_ARGS, choose  # noqa: E402  (one dropdown helper for tests and bench)

ACTIONS = ("sort", "filter", "next_page", "opacity", "open_detail", "G", "B", "U", "page_nav", "reading", "cancel")
QUIET_MS = 250

# A MutationObserver on the whole app records the time of the last DOM change; idle() waits for the end of a run.
OBSERVE_JS = """() => {
  if (window.__lat) return;
  window.__lat = {last: performance.now()};
  new MutationObserver(() => { window.__lat.last = performance.now(); })
    .observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""
IDLE_JS = """(quiet) => {
  const busy = document.querySelector('[data-testid="stStatusWidget"]') ||
               document.querySelector('[data-stale="true"]');
  return !busy && performance.now() - window.__lat.last > quiet;
}"""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--url", default="http://127.0.0.1:8501", help="the running app")
    add_measure_args(ap, repeats=5, actions=",".join(ACTIONS))
    return ap.parse_args(argv)


def add_measure_args(ap: argparse.ArgumentParser, repeats: int, actions: str) -> None:
    """The options measure() reads (bench/ui_latency_ab.py has them too), and --json."""
    ap.add_argument("--repeats", type=int, default=repeats, help="timings per action")
    ap.add_argument("--actions", default=actions, help=f"comma-separated subset of {', '.join(ACTIONS)}")
    ap.add_argument("--user", default="bench", help="user created / picked in the sidebar (picks need one)")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable (Debian's chromium)")
    ap.add_argument("--width", type=int, default=1280, help="viewport width in px")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one action")
    ap.add_argument("--cpu-slowdown", type=float, default=1.0,
                    help="slow the browser's CPU this many times (Chrome's CPU throttling; 1 = none): a slower "
                         "reader's machine, measured on a fast one")
    ap.add_argument("--json", dest="json_out", help="write the results as JSON here")


class Timer:
    """Times actions on one page: start() before the input, done() after it → seconds to the last DOM change."""

    def __init__(self, page, timeout_s: float):
        self.page, self.timeout_ms = page, timeout_s * 1000

    def idle(self) -> None:
        self.page.evaluate(OBSERVE_JS)
        self.page.wait_for_function(IDLE_JS, arg=QUIET_MS, timeout=self.timeout_ms, polling=50)

    def measure(self, act) -> float:
        """Run act() (the input) and return the seconds from just before it to the page's last change. An act given
        as (prepare, input) runs prepare() untimed first: opening a dropdown is not the input that changes a value."""
        if isinstance(act, tuple):
            prepare, act = act
            self.idle()
            prepare()
        self.idle()
        t0 = self.page.evaluate("() => performance.now()")
        act()
        self.page.wait_for_timeout(60)  # let Streamlit mark the run before idle() looks
        self.idle()
        last = self.page.evaluate("() => window.__lat.last")
        return max(0.0, (last - t0) / 1000.0)


def _shortcut(page, key: str) -> None:
    """A keyboard shortcut: focus leaves any input first (Streamlit ignores shortcuts typed into a field)."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.keyboard.press(key.lower())


def _select(page, label: str, option: str):
    """(open the dropdown, click the option): the timed input is the click on the option."""
    return (lambda: page.get_by_label(label, exact=True).first.click(),
            lambda: page.get_by_role("option", name=option, exact=True).first.click())


def _sidebar_user(page, t: "Timer", user: str) -> None:
    """Create / pick the user (Enter submits the sidebar form); retried while the URL does not name it yet."""
    for _ in range(3):
        box = page.get_by_label("…or create a user")
        box.fill(user)
        box.press("Enter")
        page.wait_for_timeout(300)
        t.idle()
        if f"user={user}" in page.url:
            return
    print(f"could not select user {user!r}: picks, G / B / U and cancel will not work", file=sys.stderr)


def gallery_actions(page, t: Timer, repeats: int, wanted: set[str]) -> dict[str, list[float]]:
    """Time the gallery actions; returns {action: [seconds, …]}."""
    out: dict[str, list[float]] = {}

    def run(name: str, steps) -> None:
        if name not in wanted:
            return
        for k in range(repeats):
            out.setdefault(name, []).append(t.measure(steps[k % len(steps)]))

    run("sort", [_select(page, "Sort by", "AP"), _select(page, "Sort by", "AR")])
    if wanted & {"filter", "opacity"} and page.get_by_label("Prediction", exact=True).count() == 0:
        page.get_by_text("Filter and display", exact=True).first.click()  # the panel is drawn only while open
        t.idle()
    run("filter", [_select(page, "Prediction", "wrong"), _select(page, "Prediction", "all")])
    page_field = page.get_by_test_id("stNumberInput").filter(has_text="Page").first.locator("input")

    def goto_page(n: int) -> None:
        page_field.fill(str(n))
        page_field.press("Enter")

    run("next_page", [lambda: goto_page(2), lambda: goto_page(1)])
    slider = page.get_by_role("slider").first
    run("opacity", [lambda: slider.press("ArrowRight"), lambda: slider.press("ArrowLeft")])
    details = page.locator(".st-key-g_cards[data-stale='false']").get_by_role("button", name="Detail", exact=True)
    run("open_detail", [lambda k=k: details.nth(k % max(1, details.count())).click() for k in range(1, 5)])
    if wanted & {"G", "B", "U"}:
        if page.get_by_role("button", name="Mark good").count() == 0:
            t.measure(lambda: details.first.click())
        for key in ("G", "B", "U"):
            run(key, [lambda key=key: _shortcut(page, key)])
    return out


def nav_action(page, t: Timer, repeats: int) -> list[float]:
    nav = page.get_by_test_id("stSidebarNav")
    out = []
    for k in range(repeats):
        target = "Annotations" if k % 2 == 0 else "Gallery"
        out.append(t.measure(lambda: nav.get_by_text(target, exact=True).click()))
    if repeats % 2:
        t.measure(lambda: nav.get_by_text("Gallery", exact=True).click())
    return out


def reading_study(user: str, n: int) -> int | None:
    """A study of n items of the newest GradCAM run, read by `user` (created by this process's identity, an admin in
    local mode, in the app's EXEMPLAR_HOME); None when there is no run."""
    from services.explanations.explaining import list_runs
    from services.reading import studies
    from services.team.access import set_role

    runs = [r for r in list_runs() if r["method"] == "gradcam"]
    if not runs:
        return None
    set_role(None, user, "researcher")  # a researcher may answer as well as browse the gallery's picks
    return studies.create_study(None, [("How well does the map justify the label?", "ordinal:1-5")], [user],
                                run_id=runs[0]["id"], n=n, name=f"latency-{int(time.time())}")["study_id"]


def reading_action(page, t: Timer, repeats: int, url: str, user: str) -> list[float]:
    """Keypress → the next item on the Reading page (the study is chosen in its picker)."""
    sid = reading_study(user, repeats + 1)
    if sid is None:
        print("reading: no GradCAM run (build the demo first): skipped", file=sys.stderr)
        return []
    page.goto(f"{url}/reading?user={user}")
    t.idle()
    box = page.get_by_label("Study", exact=True).first
    box.click()
    page.get_by_role("option").filter(has_text=f"Study {sid}:").first.click()
    t.idle()
    out = []
    for k in range(repeats):
        out.append(t.measure(lambda k=k: _shortcut(page, str(1 + k % 5))))
    return out


def cancel_action(page, t: Timer, repeats: int, timeout_s: float) -> list[float]:
    """Start an Occlusion explain job from the gallery, wait until it runs, click Cancel, time until "cancelled"."""
    out = []
    for _ in range(repeats):
        panel = page.get_by_text("Compute explanations (explain job)")
        if page.get_by_role("button", name="Start explain job").count() == 0:
            panel.click()
        choose(page, "Method", "Occlusion")
        page.get_by_role("button", name="Start explain job").click()
        try:
            page.get_by_text("running").first.wait_for(timeout=timeout_s * 1000)
        except Exception:
            print("cancel: the job never ran (is a worker running?): skipped", file=sys.stderr)
            return out
        t0 = time.monotonic()
        page.get_by_role("button", name="Cancel").first.click()
        page.get_by_text("cancelled").first.wait_for(timeout=timeout_s * 1000)
        out.append(time.monotonic() - t0)
    return out


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(0.95 * len(s) + 0.5)) - 1))]


def table(results: dict[str, list[float]]) -> str:
    lines = [f"{'action':<14}{'n':>4}{'median s':>11}{'p95 s':>9}{'max s':>9}"]
    for name, xs in results.items():
        if xs:
            lines.append(f"{name:<14}{len(xs):>4}{statistics.median(xs):>11.3f}{p95(xs):>9.3f}{max(xs):>9.3f}")
        else:
            lines.append(f"{name:<14}{0:>4}{'n/a':>11}{'n/a':>9}{'n/a':>9}")
    return "\n".join(lines)


def check_args(args: argparse.Namespace) -> set[str] | None:
    """The wanted actions, or None after a one-line message (an unknown action, no browser)."""
    wanted = {a.strip() for a in args.actions.split(",") if a.strip()}
    unknown = wanted - set(ACTIONS)
    if unknown:
        print(f"unknown action(s) {', '.join(sorted(unknown))}; choose from {', '.join(ACTIONS)}", file=sys.stderr)
        return None
    if not Path(args.chromium).exists():
        print(f"no browser at {args.chromium}: install Debian's chromium (make system-deps)", file=sys.stderr)
        return None
    return wanted


def measure(url: str, args: argparse.Namespace, wanted: set[str]) -> dict[str, list[float]]:
    """Every wanted action on the app at url, in one browser: {action: [seconds, …]} (bench/ui_latency_ab.py too)."""
    from playwright.sync_api import sync_playwright  # only when measuring: --help works without it

    results: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": args.width, "height": 1000}).new_page()
        page.set_default_timeout(args.timeout * 1000)
        if args.cpu_slowdown > 1:
            page.context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": args.cpu_slowdown})
        t = Timer(page, args.timeout)
        t0 = time.monotonic()
        page.goto(url)
        page.get_by_text("Explanation gallery").first.wait_for()
        t.idle()
        results["first screen"] = [time.monotonic() - t0]
        _sidebar_user(page, t, args.user)
        results.update(gallery_actions(page, t, args.repeats, wanted))
        if "page_nav" in wanted:  # both directions, then each: the gallery is the heavier page to draw
            nav = nav_action(page, t, args.repeats)
            results["page_nav"] = nav
            results[" →Annotations"], results[" →Gallery"] = nav[0::2], nav[1::2]
        if "reading" in wanted:
            results["reading"] = reading_action(page, t, args.repeats, url, args.user)
            page.goto(url)
            t.idle()
        if "cancel" in wanted:
            results["cancel"] = cancel_action(page, t, max(1, min(args.repeats, 3)), args.timeout)
        browser.close()
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    wanted = check_args(args)
    if wanted is None:
        return 2
    results = measure(args.url, args, wanted)
    print(table(results))
    if args.json_out:
        summary = {k: {"n": len(v), "median_s": statistics.median(v) if v else None, "p95_s": p95(v) if v else None,
                       "samples": v} for k, v in results.items()}
        Path(args.json_out).write_text(json.dumps({"url": args.url, "width": args.width, "results": summary},
                                                  indent=2))
    return 0

if __name__ == "__main__":
    sys.exit(main())
