"""viz: invariants of the renderers (colour scales, alignment with the original image, no pyplot state, shape
errors, self-contained HTML), not pictures."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

import viz
from viz._base import SIGNED_CMAP, UNSIGNED_CMAP


@dataclass(frozen=True)
class Target:
    label: str


@dataclass(frozen=True)
class StandInExplanation:
    """Same fields as vle.explain.Explanation; viz duck-types on them and must not import it."""
    patch_scores: np.ndarray
    box_scores: np.ndarray
    tokens: tuple
    token_scores: np.ndarray
    words: tuple
    word_scores: np.ndarray
    target: Target
    method: str
    signed: bool
    metadata: dict = field(default_factory=dict)

    @property
    def modality_share(self):
        image = float(np.abs(self.patch_scores).sum() + np.abs(self.box_scores).sum())
        text = float(np.abs(self.token_scores).sum())
        return {"image": image / (image + text), "text": text / (image + text)}


def _explanation(signed=True, metadata=None):
    rng = np.random.default_rng(0)
    words = ("is", "there", "a", "blue", "circle")
    return StandInExplanation(
        patch_scores=rng.normal(size=(4, 4)) if signed else rng.random((4, 4)), box_scores=np.array([0.5, -0.2]),
        tokens=("[CLS]", "is", "there", "a", "blue", "circle", "[SEP]"), token_scores=rng.normal(size=7),
        words=words, word_scores=np.array([0.1, -0.3, 0.0, 0.9, 0.6]), target=Target("yes"), method="grad_x_input",
        signed=signed, metadata=metadata if metadata is not None else {"question": "is there a blue circle ?"})


@pytest.fixture
def wide_image():
    rng = np.random.default_rng(1)
    return (rng.random((100, 200, 3)) * 200).astype(np.uint8)  # (H, W, 3): wider than tall


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """Every test doubles as a check that viz leaves no figures in pyplot's registry."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before == []


# --- geometry: the patch grid lands where the processor put it ---------------------------------------------------

def test_crop_geometry_matches_vle():
    from vle.image_utils import crop_geometry

    for width, height, size in [(200, 100, 32), (40, 56, 32), (128, 128, 224), (333, 517, 224)]:
        assert viz.crop_geometry(width, height, size) == pytest.approx(crop_geometry(width, height, size))
        scale, left, top = crop_geometry(width, height, size)  # the crop's corners, mapped back to the original
        assert viz.crop_region(width, height) == pytest.approx((left / scale, top / scale, (left + size) / scale,
                                                                (top + size) / scale))


def test_viz_doctests():
    import doctest

    for module in (viz.attention, viz.comparison, viz.export, viz.geometry, viz.heatmap, viz.tasks, viz.tokens,
                   viz._base):
        failed, _ = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert failed == 0, f"doctest failures in {module.__name__}"


@pytest.mark.parametrize("width, height", [(56, 40), (40, 64)])
def test_patch_region_matches_the_real_image_processor(width, height):
    """Paint one patch's region of the original white; after the real resize + centre crop, that patch is white."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                      do_normalize=False)
    image = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = (round(v) for v in viz.patch_region(1, 2, (4, 4), width, height))
    image[y0:y1, x0:x1] = 255
    pixels = np.asarray(processor(images=[image], return_tensors="np")["pixel_values"])[0, 0]  # (32, 32)
    per_patch = pixels.reshape(4, 8, 4, 8).mean(axis=(1, 3))  # (rows, cols)
    assert np.unravel_index(per_patch.argmax(), per_patch.shape) == (1, 2)
    assert per_patch[1, 2] > 0.9 and np.sort(per_patch.ravel())[-2] < 0.2


@pytest.mark.parametrize("shape", [(100, 200), (200, 100), (64, 64)])
def test_hot_patch_lands_on_its_pixels_in_the_original(shape):
    height, width = shape
    image = np.full((height, width, 3), 128, np.uint8)
    scores = np.zeros((4, 4))
    scores[1, 2] = 1.0
    rendered = viz.render_heatmap(scores, image, signed=False, fade=True)
    assert rendered.shape == (height, width, 3)
    x0, y0, x1, y1 = viz.crop_region(width, height)
    changed = np.any(rendered != image, axis=-1)
    inside = np.zeros((height, width), bool)
    inside[round(y0):round(y1), round(x0):round(x1)] = True
    hot = np.zeros((height, width), bool)
    px0, py0, px1, py1 = (round(v) for v in viz.patch_region(1, 2, (4, 4), width, height))
    hot[py0:py1, px0:px1] = True
    # faded zero scores leave the image untouched; only the hot patch and the cropped-away margins change
    assert np.array_equal(changed & inside, hot)
    assert np.all(changed[~inside])  # cut away by the centre crop: dimmed


def test_figure_heat_extent_is_the_crop(wide_image):
    figure = viz.plot_patch_relevance(np.ones((4, 4)), wide_image)
    background, heat = figure.axes[0].images[:2]
    assert background.get_extent() == [0, 200, 100, 0]
    assert heat.get_extent() == pytest.approx([50, 150, 100, 0])


# --- colour rules ----------------------------------------------------------------------------------------------

def test_signed_scores_get_symmetric_limits_and_a_diverging_map(wide_image):
    scores = np.array([[-0.2, 0.1], [0.05, 3.0]])
    heat = viz.plot_patch_relevance(scores, wide_image, signed=True).axes[0].images[1]
    assert heat.get_clim() == (-3.0, 3.0)
    assert heat.get_cmap().name == SIGNED_CMAP
    unsigned = viz.plot_patch_relevance(np.abs(scores), wide_image, signed=None).axes[0].images[1]
    assert unsigned.get_cmap().name == UNSIGNED_CMAP and unsigned.get_clim() == (0.0, 3.0)


def test_zero_is_white_and_the_colorbar_symmetric(wide_image):
    figure = viz.plot_patch_relevance(np.array([[-1.0, 4.0]]), wide_image)
    heat = figure.axes[0].images[1]
    assert np.allclose(heat.get_cmap()(heat.norm(0.0))[:3], 1.0, atol=0.05)
    assert figure.axes[1].get_ylim() == pytest.approx((-4.0, 4.0))  # the colorbar shows the same symmetric scale


def test_token_strip_text_stays_readable():
    figure = viz.plot_token_strip(["against", "neutral", "for"], [-1.0, 0.0, 1.0])
    colours = {text.get_text(): text.get_color() for text in figure.axes[0].texts}
    assert colours == {"against": "white", "neutral": "black", "for": "white"}


def test_token_strip_wraps_long_texts():
    words = [f"word{index}" for index in range(60)]
    one_line = viz.plot_token_strip(words[:3], np.ones(3), width=8)
    wrapped = viz.plot_token_strip(words, np.linspace(-1, 1, 60), width=8)
    heights = {round(text.get_position()[1], 6) for text in wrapped.axes[0].texts}
    assert len(heights) > 3 and wrapped.get_figheight() > one_line.get_figheight()


# --- pure: no pyplot, no torch, caller's axes respected -----------------------------------------------------------

def test_viz_imports_no_torch_pyplot_or_widgets():
    code = ("import sys, numpy as np, viz; viz.render_heatmap(np.ones((2, 2)), np.zeros((8, 8, 3)));"
            "viz.plot_patch_relevance(np.ones((2, 2)), np.zeros((8, 8, 3)));"
            "print([m for m in ('torch', 'transformers', 'ipywidgets', 'matplotlib.pyplot', 'vle.modeling_vle')"
            " if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_functions_draw_into_the_callers_axes(wide_image):
    figure = Figure()
    left, right = figure.subplots(1, 2)
    assert viz.plot_patch_relevance(np.ones((2, 2)), wide_image, ax=left, colorbar=False) is figure
    assert viz.plot_perturbation_curves([0, 1], {"a": [1, 0]}, ax=right) is figure
    assert len(left.images) == 2 and len(right.lines) == 1


def test_rcparams_untouched(wide_image):
    before = dict(matplotlib.rcParams)
    _render_everything(wide_image)
    assert dict(matplotlib.rcParams) == before


def _render_everything(image):
    rng = np.random.default_rng(0)
    text_to_image = rng.random((2, 3, 5, 17))
    image_to_text = rng.random((2, 3, 17, 5))
    tokens = ["[CLS]", "a", "red", "circle", "[SEP]"]
    maps = {"a": rng.normal(size=(4, 4)), "b": rng.random((4, 4))}
    boxes = [(10, 10, 60, 50, "circle"), (120, 20, 180, 90)]
    return [
        viz.plot_patch_relevance(maps["a"], image, grid_lines=True, boxes=boxes),
        viz.plot_token_strip(tokens, rng.normal(size=5), show_scores=True),
        viz.plot_word_attention(text_to_image, image, 2, tokens=tokens, layer=1, head=0),
        viz.plot_patch_attention(image_to_text, tokens, (1, 2), image=image),
        viz.plot_attention_grid(text_to_image, 3, tokens=tokens, image=image),
        viz.plot_perturbation_curves(np.linspace(0, 1, 5), {"a": {"positive": np.linspace(1, 0, 5)}}),
        viz.plot_method_comparison(maps, image),
        viz.plot_vcr_choices(image, [[[0], "is", "red"], "no"], [0.7, 0.3], boxes, question=["what", [0], "?"],
                             answer_label=0),
        viz.plot_pbc_overlay(rng.random((4, 4)), image, text="a red circle", threshold=0.5),
    ]


def test_every_view_renders_to_png(tmp_path, wide_image):
    for index, figure in enumerate(_render_everything(wide_image)):
        assert isinstance(figure, Figure)
        path = viz.save_png(figure, tmp_path / f"view{index}.png")
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


# --- attention, curves, agreement ------------------------------------------------------------------------------

def test_select_attention_and_grid():
    attention = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)
    assert np.array_equal(viz.select_attention(attention, layer=1, head=2), attention[1, 2])
    assert np.allclose(viz.select_attention(attention), attention.mean(axis=(0, 1)))
    assert viz.patch_grid_of(16) == ((4, 4), 0) and viz.patch_grid_of(17) == ((4, 4), 1)
    assert viz.patch_grid_of(19, grid=4) == ((4, 4), 1)  # CLS + 16 patches + 2 box tokens


def test_patch_attention_bars_are_the_attention_row():
    rng = np.random.default_rng(0)
    attention = rng.random((1, 1, 17, 3))
    figure = viz.plot_patch_attention(attention, ["a", "b", "c"], (2, 1))
    heights = [bar.get_height() for bar in figure.axes[0].patches]
    assert np.allclose(heights, attention[0, 0, 1 + 2 * 4 + 1])


def test_auc_and_legend():
    assert viz.compute_auc([0, 1], [1, 0]) == pytest.approx(0.5)
    figure = viz.plot_perturbation_curves([0, 0.5, 1], {"m": {"positive": [1, 0, 0], "negative": [1, 1, 1]}})
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["m · positive (AUC 0.250)", "m · negative (AUC 1.000)"]


def test_rank_agreement_is_spearman():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[1.0, 3.0], [2.0, 4.0]])
    matrix = viz.correlate_ranks([a, b, -a, a ** 3, np.ones((2, 2))])
    assert matrix[0, 1] == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert matrix[0, 2] == pytest.approx(-1.0) and matrix[0, 3] == pytest.approx(1.0)
    assert np.isnan(matrix[0, 4]) and np.allclose(np.diag(matrix), 1.0)
    ties = viz.correlate_ranks([np.array([[1.0, 1.0, 2.0]]), np.array([[1.0, 2.0, 3.0]])])
    assert ties[0, 1] == pytest.approx(np.sqrt(3) / 2)


# --- clear errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda img: viz.plot_patch_relevance(np.ones(16), img), r"\(rows, cols\)"),
    (lambda img: viz.plot_patch_relevance(np.array([[np.nan, 1.0]]), img), "NaN"),
    (lambda img: viz.render_heatmap(np.ones((2, 2)), img, opacity=1.5), "opacity"),
    (lambda img: viz.plot_patch_relevance(np.ones((2, 2)), np.ones((6, 6, 5))), "image array"),
    (lambda img: viz.plot_token_strip(["a", "b"], [1.0]), "2 words but 1 scores"),
    (lambda img: viz.plot_word_attention(np.ones((1, 1, 2, 19)), img, 0), "pass grid"),
    (lambda img: viz.plot_word_attention(np.ones((1, 1, 2, 17)), img, 0, layer=3), "layer 3"),
    (lambda img: viz.plot_pbc_overlay(np.full((2, 2), 2.0), img), "not logits"),
    (lambda img: viz.plot_vcr_choices(img, [[[5], "x"]], [1.0], [(0, 0, 5, 5)]), r"object\(s\) \[5\]"),
    (lambda img: viz.plot_method_comparison({"a": np.ones((2, 2)), "b": np.ones((3, 3))}, img), "one patch grid"),
    (lambda img: viz.plot_patch_relevance(np.ones((2, 2)), img, boxes=[(5, 5, 1, 1)]), "empty"),
])
def test_bad_inputs_say_what_is_wrong(call, message, wide_image):
    with pytest.raises((ValueError, IndexError)) as error:
        call(wide_image)
    assert error.match(message)


# --- HTML report -----------------------------------------------------------------------------------------------

def test_report_is_self_contained(tmp_path, wide_image):
    explanation = _explanation(metadata={"question": "is there <b>a</b> blue circle ?", "steps": 20})
    path = tmp_path / "report.html"
    page = viz.explanation_report_html(explanation, wide_image, path, figures={
        "curves": viz.plot_perturbation_curves([0, 1], {"a": [1, 0]})})
    assert path.read_text(encoding="utf-8") == page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") == 2
    assert page.count("<span") == len(explanation.words)
    assert "&lt;b&gt;a&lt;/b&gt;" in page  # metadata is escaped, not interpreted
    assert f"image {100 * explanation.modality_share['image']:.0f}%" in page
    assert "grad_x_input" in page and "yes" in page


def test_report_falls_back_to_tokens_and_rejects_non_explanations(wide_image):
    explanation = _explanation(signed=False)
    explanation = StandInExplanation(**{**explanation.__dict__, "words": (), "word_scores": np.zeros(0)})
    page = viz.explanation_report_html(explanation, wide_image)
    assert page.count("<span") == len(explanation.tokens)
    with pytest.raises(TypeError, match="missing"):
        viz.explanation_report_html(object(), wide_image)
