"""Regenerate the README's pictures of the workbench: Voilà serves notebooks/explorer.ipynb on a free port of
127.0.0.1, headless Chromium (Debian's, driven by Playwright) opens every tab (each runs its default example; the VQA
tab is asked QUESTION with Run), and each explorer's area is saved as a PNG next to this script.

Usage: .venv/bin/python pics/make_screenshots.py ["TAB TITLE" ...]     (no title: every tab)

Writes pics/workbench.png (the VQA tab with the tab bar: the front-page picture) and pics/workbench_vqa.png,
workbench_attention.png, workbench_itm.png, workbench_vcr.png, workbench_compare.png (one explorer each, on
shapes_0), workbench_dataset.png (the Dataset tab on its default run of held-out scenes) and workbench_what_if.png
(the What if tab with the green triangle of shapes_0 clicked and removed). Needs /usr/bin/chromium (``make test``
installs it with apt; never ``playwright install``). Takes about half a minute, most of it the notebook loading the
models. The status lines (and VQA's "computed in") show measured
times: those few pixels change from run to run, the rest of each picture does not. Exits with 1, saying what each
failed explorer shows, when one cannot run.
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import Locator, Page, sync_playwright

from widgets.serve import CHROMIUM_ARGS, served_app

ROOT = Path(__file__).resolve().parent.parent
PICS = ROOT / "pics"
CHROMIUM = "/usr/bin/chromium"
# Voilà scrolls an inner panel: a tall viewport keeps every explorer on screen, so element shots are never cut off
VIEWPORT = {"width": 1200, "height": 2400}
SCENE = "shapes_0"
QUESTION = "what size is the green object ?"  # the shipped VQA model answers it correctly on shapes_0
LOAD_TIMEOUT_S = 240  # the first GET runs the notebook: imports and every explorer's model load
RUN_TIMEOUT_S = 240  # the slowest Run (Compare methods: several explanation methods on CPU)
MARGIN = 12  # pixels of background around an explorer (less than the tab panel's padding: its border stays out)
SIZE_BUDGET = 150_000  # bytes per PNG: above it the picture is stored with a palette

# tab title (as widgets.app.TABS spells it), output file, CSS class of the picture that Run draws
TABS = (("VQA", "workbench_vqa.png", "vle-heatmap"),
        ("Attention", "workbench_attention.png", "vle-attention"),
        ("ITM / PBC", "workbench_itm.png", "vle-itm"),
        ("VCR", "workbench_vcr.png", "vle-vcr-q2a"),
        ("Compare methods", "workbench_compare.png", "vle-comparison"),
        ("Dataset", "workbench_dataset.png", "vle-overview"),
        ("What if", "workbench_what_if.png", "vle-what-if-after-map"))
GREEN_TRIANGLE = (107, 112)  # its centre in shapes_0 (pics/shapes_0.json): what the What if picture removes
FRONT = "workbench.png"


def settle(page: Page) -> None:
    """No hover, focus ring or text caret in the picture, and two frames for the last layout to be painted."""
    page.mouse.move(0, 0)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def pick_scene(panel: Locator) -> bool:
    """Show SCENE; True when that changed the image (the result on screen is then of another one)."""
    source = panel.locator(".vle-image-source select")
    if source.count() and source.input_value() != SCENE:
        source.select_option(SCENE)
        return True
    return False


def wait_until_done(page: Page, panel: Locator, title: str) -> str:
    """Wait until the explorer's run has finished; the status line then."""
    button, status = panel.locator("button.vle-run"), panel.locator(".vle-status").first
    deadline = time.monotonic() + RUN_TIMEOUT_S
    # Status.run disables the button while working and ends with "done in … s" or the error in words; the working
    # messages all end with "…"; the line is empty until the first run (a tab's default starts once it is opened)
    while True:
        text = status.inner_text().strip()
        if button.is_enabled() and text and not text.endswith("…"):
            return text
        if time.monotonic() > deadline:
            raise RuntimeError(f"{title}: the run did not finish in {RUN_TIMEOUT_S} s (status: {text!r})")
        page.wait_for_timeout(100)


def run_and_wait(page: Page, panel: Locator, title: str, picture_class: str, press: bool) -> str:
    """Wait for the default example the tab runs when opened and, with ``press``, then for Run on what the controls
    say now; then until its picture is loaded. Returns the status line."""

    picture = panel.locator(f"img.{picture_class}")
    text = wait_until_done(page, panel, title)
    if press:
        before = picture.get_attribute("src")  # a new blob URL for every new picture
        panel.locator("button.vle-run").click()
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while picture.get_attribute("src") == before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{title}: Run drew no new picture in {RUN_TIMEOUT_S} s")
            page.wait_for_timeout(100)
        text = wait_until_done(page, panel, title)
    if not text.startswith("done"):
        raise RuntimeError(f"{title}: the explorer shows an error: {text}")
    try:
        picture.wait_for(state="visible", timeout=10_000)
    except Exception:  # noqa: BLE001  (a render error is shown in the status line, then overwritten by "done")
        status = panel.locator(".vle-status").first.inner_text().strip()
        raise RuntimeError(f"{title}: the run said {text!r} but drew no picture (img.{picture_class} stays hidden); "
                           f"status now: {status!r}") from None
    # every picture of the explorer decoded, not only the one waited for (VQA's token strip, VCR's second stage)
    page.wait_for_function("""(panel) => [...panel.querySelectorAll('img')]
        .filter(img => img.offsetParent !== null).every(img => img.complete && img.naturalWidth > 0)""",
                           arg=panel.element_handle(), timeout=10_000)
    return text


# The rightmost pixel any visible text, picture or control of the explorer paints. Boxes are no measure: the
# accordion and the HTML widgets stretch to the viewport's width whatever their content.
CONTENT_RIGHT = """(panel) => {
    const shown = r => r.width > 0 && r.height > 0;
    let right = 0;
    for (const el of panel.querySelectorAll('img, input, select, button, textarea, .noUi-target')) {
        const r = el.getBoundingClientRect();
        if (shown(r)) right = Math.max(right, r.right);
    }
    const texts = document.createTreeWalker(panel, NodeFilter.SHOW_TEXT), range = document.createRange();
    while (texts.nextNode()) {
        if (!texts.currentNode.textContent.trim()) continue;
        range.selectNodeContents(texts.currentNode);
        for (const r of range.getClientRects()) if (shown(r)) right = Math.max(right, r.right);
    }
    return right;
}"""


def remove_an_object(page: Page, panel: Locator) -> None:
    """Click the green triangle in the What if picture, press Remove, and wait for the after side to be redrawn."""
    picture = panel.locator("img.vle-what-if-after-map")
    before = picture.get_attribute("src")
    canvas = panel.locator("img.vle-what-if-canvas").bounding_box()
    page.mouse.click(canvas["x"] + GREEN_TRIANGLE[0] / 128 * canvas["width"],
                     canvas["y"] + GREEN_TRIANGLE[1] / 128 * canvas["height"])
    panel.locator(".vle-what-if-picked", has_text="green").wait_for(timeout=30_000)
    panel.locator("button.vle-remove").click()
    panel.locator(".vle-what-if-summary", has_text="removed").wait_for(timeout=30_000)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while picture.get_attribute("src") == before:
        if time.monotonic() > deadline:
            raise RuntimeError("What if: removing the green triangle drew no new picture")
        page.wait_for_timeout(100)
    page.wait_for_function("""(panel) => [...panel.querySelectorAll('img')]
        .filter(img => img.offsetParent !== null).every(img => img.complete && img.naturalWidth > 0)""",
                           arg=panel.element_handle(), timeout=10_000)


def shoot(page: Page, panel: Locator, front: Locator | None = None) -> bytes:
    """The explorer with MARGIN pixels around it (or ``front``, an element around it), in a viewport just as wide as
    the explorer's content: a narrower page narrows the full-width boxes too, so nothing is cut and no blank strip is
    left on the right."""

    left = panel.bounding_box()["x"]
    right = page.evaluate(CONTENT_RIGHT, panel.element_handle())
    # the page puts as much padding right of the explorer as left of it
    page.set_viewport_size({"width": min(VIEWPORT["width"], int(right + left + MARGIN + 1)),
                            "height": VIEWPORT["height"]})
    try:
        settle(page)
        if front is not None:
            return front.screenshot()
        box = panel.bounding_box()
        return page.screenshot(clip={"x": box["x"] - MARGIN, "y": box["y"] - MARGIN,
                                     "width": box["width"] + 2 * MARGIN, "height": box["height"] + 2 * MARGIN})
    finally:
        page.set_viewport_size(VIEWPORT)
        settle(page)


def save_png(shot: bytes, path: Path) -> int:
    """Store the screenshot as small as Pillow can; returns the size in bytes."""

    image = Image.open(io.BytesIO(shot)).convert("RGB")
    image.save(path, optimize=True)
    if path.stat().st_size > SIZE_BUDGET:
        # the scenes' noisy backgrounds are what costs: a 256-colour palette fitted to the picture (max coverage,
        # refined by k-means) with error diffusion keeps colour bars smooth and shapes their colour (median cut turns
        # the yellow triangle orange and bands the colour bars), at about half the bytes
        palette = image.quantize(256, method=Image.Quantize.MAXCOVERAGE, kmeans=3)
        image.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    if path.stat().st_size > SIZE_BUDGET:
        print(f"note: {path.name} is {path.stat().st_size / 1000:.0f} kB, over {SIZE_BUDGET / 1000:.0f} kB")
    return path.stat().st_size


def shoot_tab(page: Page, index: int, title: str, name: str, picture_class: str, scratch: Path) -> list[tuple]:
    """Select the tab, Run its explorer, save its picture(s); returns [(file name, bytes written)]. An explorer that
    shows an error is saved to ``scratch`` as it looks, and the error raised."""

    tab = page.locator(".vle-workbench .lm-TabBar-tab").nth(index)
    panel = page.locator(".vle-workbench > .widget-tab-contents > *").nth(index)
    if tab.inner_text().strip() != title:
        raise RuntimeError(f"tab {index} is {tab.inner_text().strip()!r}, expected {title!r}")
    tab.click()
    panel.wait_for(state="visible")
    if not panel.locator("button.vle-run").count():  # the app shows why an explorer could not start in its place
        raise RuntimeError(f"{title}: {panel.inner_text().strip()}")
    started = time.monotonic()
    press = pick_scene(panel)
    if title == "VQA":
        question = panel.locator(".vle-question input")
        question.fill(QUESTION)
        question.press("Enter")  # continuous_update=False: the kernel sees the text on Enter
        press = True
    try:
        status = run_and_wait(page, panel, title, picture_class, press)
    except RuntimeError:
        save_png(shoot(page, panel), scratch / name)
        raise
    if title == "What if":
        remove_an_object(page, panel)
    answer = f", answer {panel.locator('.vle-answer-text').inner_text().strip()!r}" if title == "VQA" else ""
    print(f"{title}: {status} (opening the tab to picture {time.monotonic() - started:.1f} s{answer})")
    written = [(name, save_png(shoot(page, panel), PICS / name))]
    if title == "VQA":
        written.append((FRONT, save_png(shoot(page, panel, page.locator(".vle-workbench")), PICS / FRONT)))
    return written


def shoot_all(url: str, scratch: Path, only=()) -> tuple[list[tuple], list[str]]:
    """Every tab of the workbench at ``url`` (or those titled in ``only``): ([(file name, bytes written)], [what
    failed, in words])."""

    written, failures = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            started = time.monotonic()
            page.goto(url)
            try:
                page.locator(".vle-workbench").wait_for(state="visible", timeout=LOAD_TIMEOUT_S * 1000)
            except Exception:  # noqa: BLE001  (say what the page shows instead: Voilà's error or a traceback)
                body = page.locator("body").inner_text()[-2000:]
                raise RuntimeError(f"the workbench did not appear; the page shows:\n{body}") from None
            print(f"workbench shown in {time.monotonic() - started:.1f} s")
            for index, (title, name, picture_class) in enumerate(TABS):
                if only and title not in only:
                    continue
                try:  # one broken explorer must not cost the other pictures
                    written += shoot_tab(page, index, title, name, picture_class, scratch)
                except RuntimeError as error:
                    failures.append(str(error))
        finally:
            browser.close()
    return written, failures


def main(only=()) -> int:
    started = time.monotonic()
    # Voilà's log and the pictures of explorers that failed: kept only when something went wrong
    scratch = Path(tempfile.mkdtemp(prefix="vle-screenshots-"))
    with open(scratch / "voila.log", "w") as log:
        try:
            with served_app(log, env={"VLE_WORKBENCH_RUNS": str(scratch / "runs")}) as url:
                written, failures = shoot_all(url, scratch, only)
        except Exception:
            print(f"Voilà's log: {log.name}", file=sys.stderr)
            raise
    for name, size in written:
        print(f"wrote {(PICS / name).relative_to(ROOT)} ({size / 1000:.0f} kB)")
    print(f"{len(written)} pictures in {time.monotonic() - started:.0f} s")
    if not failures:
        shutil.rmtree(scratch)
        return 0
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    print(f"Voilà's log and the failed explorers as they looked: {scratch}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
