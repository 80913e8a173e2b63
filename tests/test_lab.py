"""The workbench in JupyterLab 4 (what ``make lab`` opens), driven in Debian's Chromium: the explorer notebook run in
Lab, its Dataset tab filtered to the wrong answers, one opened with its explanation (the same steps as the Voilà test,
through Lab's own widget manager and the ipydatagrid and bqplot extensions it loads).

Lab runs on a temporary copy of the notebook (it autosaves), with its news pop-up off and no token, and the notebook
is run only once its kernel is idle (otherwise a "Select Kernel" dialog can appear).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

pytest.importorskip("playwright", reason="pip install -e '.[test]' installs playwright")
pytest.importorskip("jupyterlab", reason="pip install -e . installs jupyterlab")
from playwright.sync_api import expect  # noqa: E402

from widgets.app import TABS  # noqa: E402
from widgets.serve import free_port, wait_for_port  # noqa: E402

from .test_browser import ARTIFACTS, ROOT, open_a_wrong_answer  # noqa: E402

if shutil.which("chromium") is None:
    pytest.skip("Debian's chromium is not on PATH: `make test` installs it", allow_module_level=True)




@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "notebooks" / "explorer.ipynb", root / "explorer.ipynb")
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                            "checkForUpdates": False}))
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLE_WORKBENCH_RUNS": str(root / "runs"),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "lab.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
             "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
             f"--LabApp.user_settings_dir={root / '.settings'}", "--LabApp.expose_app_in_browser=True",
             "--ServerApp.open_browser=False", "--allow-root"], cwd=root, env=env, stdout=log,
            stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, server, log.name, timeout=90)
            yield f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb"
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def run_the_notebook(page, lab_url):
    """Open the notebook in Lab, run it once its kernel is idle, and return the workbench's tab locator."""
    page.goto(lab_url)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                           "window.jupyterapp.shell.currentWidget.sessionContext", timeout=120_000)
    deadline = time.monotonic() + 120
    while page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status") \
            != "idle":
        if time.monotonic() > deadline:
            pytest.fail("the notebook's kernel did not become idle")
        page.wait_for_timeout(250)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    tabs = page.locator(".vle-workbench .lm-TabBar-tab")
    tabs.first.wait_for(state="visible", timeout=180_000)
    return tabs


@pytest.mark.timeout(600)
def test_lab_dataset_and_what_if_tabs(page, lab_url):
    """The workbench in JupyterLab 4, its notebook run once: the Dataset tab filters to wrong answers and opens one;
    in the What if tab a click on the picture reaches the kernel through ipyevents and picks the object under it.
    (One page and one kernel: a second page on the same notebook would share the first one's busy kernel.)"""
    tabs = run_the_notebook(page, lab_url)
    assert tabs.count() == len(TABS)
    index = list(TABS).index("Dataset")
    tabs.nth(index).click()
    panel = page.locator(".vle-workbench > .widget-tab-contents > *").nth(index)
    expect(panel.locator(".vle-dataset-grid canvas").first).to_be_visible(timeout=120_000)
    expect(panel.locator(".vle-projection")).to_be_visible()
    open_a_wrong_answer(page, panel)
    page.screenshot(path=str(ARTIFACTS / "lab_dataset.png"), full_page=True)

    index = list(TABS).index("What if")
    tabs.nth(index).click()
    panel = page.locator(".vle-workbench > .widget-tab-contents > *").nth(index)
    expect(panel.locator(".vle-status").first).to_contain_text("done", timeout=120_000)
    canvas = panel.locator("img.vle-what-if-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 107 / 128 * box["width"], box["y"] + 112 / 128 * box["height"])  # shapes_0's green
    expect(panel.locator(".vle-what-if-picked")).to_contain_text("green triangle", timeout=30_000)
