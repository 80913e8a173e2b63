"""The served explorer in a real browser: Voilà on 127.0.0.1 serves notebooks/explorer.ipynb, Playwright drives
Debian's Chromium (``make test`` installs it with apt; Playwright never downloads a browser here).

The app opens with the VQA tab's default example answered. The test types a question the shipped model answers
correctly (the truth comes from the scene JSON, and the model's own pipeline must agree), runs it, checks the answer
shown, switches method and layer and checks that the picture changed; then it opens every tab and checks that each
shows a result without Run. A screenshot is kept under artifacts/.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
SIMPLE_FAMILIES = ("size", "exists")  # questions the embedded model answers from one object's attributes

pytest.importorskip("playwright", reason="pip install -e '.[test]' installs playwright")
pytest.importorskip("voila", reason="pip install -e . installs voila")
from playwright.sync_api import expect  # noqa: E402

from widgets.app import TABS  # noqa: E402
from widgets.serve import served_app  # noqa: E402

if shutil.which("chromium") is None:
    pytest.skip("Debian's chromium is not on PATH: `make test` installs it (apt-get install -y chromium)",
                allow_module_level=True)
if not (ROOT / "vle" / "checkpoints" / "vle-tiny-shapes-vqa" / "config.json").is_file():
    pytest.skip("the embedded VQA model is not shipped yet", allow_module_level=True)




class _ChatCompletions(http.server.BaseHTTPRequestHandler):
    """A stand-in LLM server speaking the chat-completions protocol: it picks candidate B and answers in a sentence."""

    def do_GET(self):  # noqa: N802
        self._reply({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        text = "B" if "Answer with" in prompt else "The model's second guess, phrased as a sentence."
        self._reply({"object": "chat.completion", "model": "stub",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}]})

    def _reply(self, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def llm_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ChatCompletions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def explorer_url(llm_url, tmp_path_factory):
    """Voilà on the explorer notebook; ready when its port accepts connections (a GET would start a kernel). The
    dataset tab's default run goes to a temporary folder."""
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"OMP_NUM_THREADS": "1", "VLE_LLM_BASE_URL": llm_url, "VLE_LLM_MODEL": "stub",
           "VLE_WORKBENCH_RUNS": str(tmp_path_factory.mktemp("runs"))}
    with open(ARTIFACTS / "voila.log", "w") as log, served_app(log, env=env) as url:
        yield url


@pytest.fixture(scope="session")
def simple_question():
    """(scene, question, truth): the first size/exists question whose truth (scene JSON) the shipped model's
    pipeline also gives as its top answer."""
    from vle.pipelines import pipeline

    vqa = pipeline("vqa", "vle-tiny-shapes-vqa")
    for path in sorted((ROOT / "pics").glob("shapes_*.json")):
        record = json.loads(path.read_text())
        for item in record["questions"]:
            if item["family"] not in SIMPLE_FAMILIES:
                continue
            top = vqa(image=str(path.with_suffix(".png")), question=item["question"], top_k=1)[0]["answer"]
            if top == item["answer"]:
                return path.stem, item["question"], item["answer"]
    pytest.fail("the shipped VQA model answers none of the size/exists questions in pics/ correctly")


def _image_digest(page, selector: str) -> str:
    """The bytes behind an <img src="blob:..."> as a short digest computed in the page."""
    return page.evaluate("""async (selector) => {
        const img = document.querySelector(selector);
        if (!img || !img.src) return "";
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let h = 0;
        for (const b of bytes) h = (h * 31 + b) >>> 0;
        return bytes.length + ":" + h;
    }""", selector)


def _wait_for_new_image(page, selector: str, old: str, what: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        digest = _image_digest(page, selector)
        if digest and digest != old:
            return digest
        page.wait_for_timeout(100)
    pytest.fail(f"the picture did not change after {what}")


@pytest.mark.timeout(240)
def test_explorer_answers_and_redraws(page, explorer_url, simple_question):
    scene, question, truth = simple_question
    page.goto(explorer_url)
    vqa = page.locator(".vle-vqa-explorer")  # the first tab; the other explorers have controls of the same kind
    vqa.locator(".vle-question input").wait_for(state="visible", timeout=150_000)
    answer = vqa.locator(".vle-answer-text")
    answer.wait_for(state="visible", timeout=60_000)  # the default example's answer, before anyone presses Run
    heatmap = ".vle-vqa-explorer .vle-heatmap"
    default = _wait_for_new_image(page, heatmap, "", "opening the app")
    # a fixed_axes heatmap shows its 128-pixel scene at 80% of its width: 384 pixels or more
    assert vqa.locator(".vle-heatmap").bounding_box()["width"] >= 480

    vqa.locator(".vle-image-source select").select_option(scene)
    field = vqa.locator(".vle-question input")
    field.fill(question)
    field.press("Enter")
    vqa.locator("button.vle-run").click()
    first = _wait_for_new_image(page, heatmap, default, "Run")
    expect(answer).to_have_text(truth)

    vqa.locator(".vle-method select").select_option("raw_attention")
    after_method = _wait_for_new_image(page, heatmap, first, "switching the method to raw_attention")
    vqa.locator(".vle-layer select").select_option(label="0")
    after_layer = _wait_for_new_image(page, heatmap, after_method, "switching to layer 0")
    assert len({first, after_method, after_layer}) == 3
    info = vqa.locator(".vle-info")
    expect(info).to_contain_text("raw_attention")
    expect(info.locator("tr", has_text="layer")).to_contain_text("0")

    assert "error" not in vqa.locator(".vle-status").first.inner_text().lower()
    assert answer.inner_text().strip() == truth  # a view change keeps the answer
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_explorer.png"), full_page=True)

    # the VQA + LLM panel against the local chat-completions server: the stub always picks candidate B
    vqa.get_by_text("VQA + LLM").click()
    vqa.locator("button.vle-llm-ask").click()
    short = vqa.locator(".vle-llm-short")
    short.wait_for(state="visible", timeout=60_000)
    candidates = vqa.locator(".vle-llm-result table tr")
    second = candidates.nth(2).locator("td").nth(1).inner_text().strip()
    assert short.inner_text().strip() == second != truth
    expect(vqa.locator(".vle-llm-result")).to_contain_text("changed the answer")
    page.screenshot(path=str(ARTIFACTS / "browser_explorer_llm.png"), full_page=True)


@pytest.mark.timeout(240)
def test_every_tab_shows_a_result_without_run(page, explorer_url):
    """Opening a tab runs its explorer's default example once: a picture and a "done" status, no Run pressed."""
    page.goto(explorer_url)
    tabs = page.locator(".vle-workbench .lm-TabBar-tab")
    tabs.first.wait_for(state="visible", timeout=150_000)
    assert tabs.count() == len(TABS)
    for index, title in enumerate(TABS):
        tabs.nth(index).click()
        panel = page.locator(".vle-workbench > .widget-tab-contents > *").nth(index)
        expect(panel.locator(".vle-status").first).to_contain_text("done", timeout=60_000)
        expect(panel.locator("img").first).to_be_visible()
        assert "error" not in panel.locator(".vle-status").first.inner_text().lower(), title


def open_a_wrong_answer(page, panel) -> None:
    """The dataset tab as a user works it: filter to the wrong answers, click the second row of the table (the tab
    opens on the first wrong answer), and see that example's stored explanation (its picture redrawn, its text saying
    it is wrong)."""
    expect(panel.locator(".vle-status").first).to_contain_text("done", timeout=120_000)
    expect(panel.locator(".vle-dataset-summary")).to_contain_text("accuracy")
    panel.locator(".vle-right-wrong button", has_text="wrong").click()
    expect(panel.locator(".vle-dataset-summary")).not_to_contain_text(" of 0")
    expect(panel.locator(".vle-dataset-summary")).to_contain_text(re.compile(r"accuracy\s*0\.000"), timeout=30_000)
    before = _image_digest(page, "img.vle-example")
    grid = panel.locator(".vle-dataset-grid").bounding_box()
    page.wait_for_timeout(500)  # the grid redraws its rows after the filter
    page.mouse.click(grid["x"] + 200, grid["y"] + 51)  # rows of 20 pixels under a 20-pixel header
    _wait_for_new_image(page, "img.vle-example", before, "clicking a wrong answer's row")
    expect(panel.locator(".vle-example-text")).to_contain_text("✘ wrong")
    expect(panel.locator(".vle-example-text")).to_contain_text("stored coattention_relevance")


@pytest.mark.timeout(300)
def test_dataset_tab_filters_to_wrong_answers_and_opens_one(page, explorer_url):
    page.goto(explorer_url)
    tabs = page.locator(".vle-workbench .lm-TabBar-tab")
    tabs.first.wait_for(state="visible", timeout=150_000)
    index = list(TABS).index("Dataset")
    tabs.nth(index).click()
    panel = page.locator(".vle-workbench > .widget-tab-contents > *").nth(index)
    open_a_wrong_answer(page, panel)
    page.screenshot(path=str(ARTIFACTS / "browser_dataset.png"), full_page=True)


def _open_tab(page, explorer_url, title: str):
    page.goto(explorer_url)
    tabs = page.locator(".vle-workbench .lm-TabBar-tab")
    tabs.first.wait_for(state="visible", timeout=150_000)
    index = list(TABS).index(title)
    tabs.nth(index).click()
    panel = page.locator(".vle-workbench > .widget-tab-contents > *").nth(index)
    expect(panel.locator(".vle-status").first).to_contain_text("done", timeout=120_000)
    return panel


def _click_in_image(page, locator, x: float, y: float, size=(128, 128)) -> None:
    """A click at image pixel (x, y) of a picture shown scaled."""
    box = locator.bounding_box()
    page.mouse.click(box["x"] + x / size[0] * box["width"], box["y"] + y / size[1] * box["height"])


@pytest.mark.timeout(300)
def test_what_if_tab_toggles_a_head_and_removes_an_object(page, explorer_url):
    """A head's cell ablates it (the after answer and probability follow the engine's ``ablate``); a click on the
    green triangle picks it, Remove takes it out of the picture, and the after side is asked again."""
    from vle.explain.interventions import ablate
    from vle.explain.sweep import ablation_sweep
    from vle.shapes.counterfactual import remove_object
    from vle.shapes.world import make_scene
    from widgets._common import load_session
    from widgets._heads import cell_class
    from widgets._what_if_state import model_inputs
    from widgets.what_if import DEFAULT_QUESTION

    session = load_session("vle-tiny-shapes-vqa")
    names, scene = session.model.config.id2label, make_scene(0)
    inputs = session.prepare(scene.image, DEFAULT_QUESTION)
    sweep = ablation_sweep(session.model, model_inputs(inputs))
    worst = min(sweep["effects"], key=lambda e: e["delta"])
    with ablate(session.model, {worst["site"]: [worst["head"]]}):
        ablated = session.answers(inputs, 1)[0]
    green = next(o for o in scene.objects if o.color == "green")
    removed = session.answers(session.prepare(remove_object(scene, green.index).image, DEFAULT_QUESTION), 1)[0]

    panel = _open_tab(page, explorer_url, "What if")
    after = panel.locator(".vle-what-if-after")
    expect(after.locator(".vle-answer-text")).to_have_text(names[sweep["index"]])
    picture = "img.vle-what-if-after-map"
    first = _wait_for_new_image(page, picture, "", "opening the tab")

    panel.locator(f"button.{cell_class(worst['site'], worst['head'])}").click()
    expect(after.locator(".vle-answer-text")).to_have_text(ablated["answer"], timeout=30_000)
    expect(after.locator(".vle-probability")).to_have_text(f"{ablated['score']:.3f}")
    toggled = _wait_for_new_image(page, picture, first, "ablating a head")
    expect(panel.locator(".vle-what-if-summary")).to_contain_text("ablated")
    panel.locator(f"button.{cell_class(worst['site'], worst['head'])}").click()  # restored
    expect(after.locator(".vle-answer-text")).to_have_text(names[sweep["index"]], timeout=30_000)
    restored = _wait_for_new_image(page, picture, toggled, "restoring the head")

    canvas = panel.locator("img.vle-what-if-canvas")
    _click_in_image(page, canvas, *green.center)
    expect(panel.locator(".vle-what-if-picked")).to_contain_text("green triangle", timeout=30_000)
    panel.locator("button.vle-remove").click()
    expect(after.locator(".vle-answer-text")).to_have_text(removed["answer"], timeout=30_000)
    expect(after.locator(".vle-probability")).to_have_text(f"{removed['score']:.3f}")
    expect(panel.locator(".vle-what-if-summary")).to_contain_text("green triangle removed")
    edited = _wait_for_new_image(page, picture, restored, "removing the green triangle")

    box = canvas.bounding_box()  # a dragged box: painted over (the browser must not drag the picture away)
    page.mouse.move(box["x"] + 0.1 * box["width"], box["y"] + 0.6 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.8 * box["height"], steps=5)
    page.mouse.up()
    expect(panel.locator(".vle-what-if-summary")).to_contain_text("painted over", timeout=30_000)
    _wait_for_new_image(page, picture, edited, "painting a box over")
    assert "error" not in panel.locator(".vle-status").first.inner_text().lower()
    page.screenshot(path=str(ARTIFACTS / "browser_what_if.png"), full_page=True)


@pytest.mark.timeout(240)
def test_attention_patch_is_picked_by_a_click(page, explorer_url):
    panel = _open_tab(page, explorer_url, "Attention")
    figure = ".vle-workbench img.vle-attention"
    first = _wait_for_new_image(page, figure, "", "opening the tab")
    _click_in_image(page, panel.locator("img.vle-patch-picker"), 100, 20)
    _wait_for_new_image(page, figure, first, "clicking a patch")
    expect(panel.locator(".widget-toggle-buttons button.mod-active").first).to_have_text("patch → words")
