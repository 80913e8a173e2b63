"""The dataset explorer and the slice statistics behind it, on real batch runs of the embedded models: filters (in the
grid and in the summaries), the slice's numbers against a direct computation, the projection's box and lasso, opening an
example
with its stored explanation and a live one, export in three formats, the default run made on first show, VCR runs;
and ``vle.analysis`` against scipy and numpy references."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
from ipydatagrid.datagrid import StreamingDataGrid
from scipy import stats

from vle import analysis
from vle.batch import run_batch
from vle.data import shapes_source
from vle.store import open_run

SEED = 1_000_003


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    run_batch(shapes_source(SEED, 6), "vle-tiny-shapes-vqa", str(folder), progress=False)
    return folder


@pytest.fixture(scope="module")
def explorer(run_folder):
    from widgets import DatasetExplorer

    explorer = DatasetExplorer(str(run_folder))
    explorer.ensure_run()
    assert explorer.status.error is None, explorer.status.message.value
    return explorer


def reset(explorer):
    with explorer.hold_trait_notifications():
        explorer.right.value, explorer.field.value, explorer.search.value = "all", "(all)", ""
        explorer.probability.value = (0.0, 1.0)
    explorer._clear_box()


def test_opens_with_table_summary_pictures_and_an_example(explorer, run_folder):
    table = open_run(run_folder).to_pandas()
    assert len(explorer.table) == len(explorer.grid.data) == len(table)
    assert "family" in explorer.field.options and explorer.method.value == "coattention_relevance"
    assert f"<b>{len(table)}</b> of {len(table)}" in explorer.summary.value
    assert explorer.overview.value and explorer.mean_map.value
    assert len(explorer.scatter.x) == len(table) and np.isfinite(explorer.xy).all()
    assert explorer.current is not None and explorer.current["row"]["question"] in explorer.example_text.value


def test_filters_reach_the_grid_and_the_summary(explorer):
    reset(explorer)
    explorer.right.value = "wrong"
    assert (explorer.filtered["correct"] == False).all()  # noqa: E712
    assert {"type": "filter", "column": "correct", "operator": "=", "value": False} in explorer.grid._transforms
    explorer.right.value = "all"
    explorer.field.value = "family"
    explorer.value.value = "count"
    explorer.search.value = "large"
    explorer.probability.value = (0.5, 1.0)
    expected = explorer.table[(explorer.table["slice_family"] == "count") & explorer.table["question"].str.contains(
        "large") & explorer.table["probability"].between(0.5, 1.0)]
    assert list(explorer.filtered["id"]) == list(expected["id"]) and len(expected) > 0
    summary = explorer.summary_data
    assert summary["count"] == len(expected) and summary["accuracy"] == pytest.approx(expected["score"].mean())
    operators = {(f["column"], f["operator"]) for f in explorer.grid._transforms}
    assert operators == {("family", "="), ("question", "stringContains"), ("probability", "between")}
    # the grid shows what the summary counts: its transforms applied as ipydatagrid's Python mirror of them does
    visible = StreamingDataGrid._apply_frontend_transforms(explorer.grid, explorer.grid._transforms, explorer.grid.data)
    assert sorted(visible["id"]) == sorted(expected["id"])
    reset(explorer)


def test_a_box_in_the_projection_filters_the_table(explorer):
    reset(explorer)
    x, y = explorer.xy[:, 0], explorer.xy[:, 1]
    explorer.select_box((x.min() - 1, float(np.median(x))), (y.min() - 1, y.max() + 1))
    inside = explorer.table["id"][x <= np.median(x)]
    assert set(explorer.filtered["id"]) == set(inside) and 0 < len(inside) < len(explorer.table)
    explorer._clear_box()
    assert len(explorer.filtered) == len(explorer.table)


def test_a_lasso_in_the_projection_filters_the_table(explorer, monkeypatch):
    reset(explorer)
    explorer.selector.value = "lasso"
    assert explorer.projection.interaction is explorer.lasso
    explorer.scatter.selected = [0, 2, 5]  # what bqplot sets when a lasso closes around drawn points
    assert set(explorer.filtered["id"]) == set(explorer.table["id"].iloc[explorer._drawn[[0, 2, 5]]])
    # with fewer points drawn than examples, each example goes with its nearest drawn point
    import widgets.dataset as dataset

    monkeypatch.setattr(dataset, "SHOWN_POINTS", 10)
    explorer._color_points()
    explorer.scatter.selected = [1, 4]
    drawn = explorer.xy[explorer._drawn]
    nearest = np.argmin(((explorer.xy[:, None, :] - drawn[None]) ** 2).sum(-1), axis=1)
    expected = explorer.table["id"][np.isin(nearest, [1, 4])]
    assert set(explorer.filtered["id"]) == set(expected) and len(expected) >= 2
    monkeypatch.setattr(dataset, "SHOWN_POINTS", 5_000)
    explorer._color_points()
    explorer.selector.value = "box"
    assert explorer.projection.interaction is explorer.brush and len(explorer.filtered) == len(explorer.table)


def test_open_an_example_then_explain_it_live(explorer):
    reset(explorer)
    example_id = explorer.table["id"].iloc[3]
    explorer.open_example(example_id)
    stored = explorer.example_figure.value
    assert "stored coattention_relevance" in explorer.example_text.value
    explorer.live_method.value = "rollout"
    explorer.live_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    assert "live rollout" in explorer.example_text.value and explorer.example_figure.value != stored
    explorer._cell_clicked({"primary_key_row": 5})
    assert explorer.current["row"]["id"] == explorer.grid.data.iloc[5]["id"]


def test_export_the_slice_in_three_formats(explorer):
    reset(explorer)
    explorer.right.value = "right"
    ids = set(explorer.filtered["id"])
    csv = explorer.export("CSV")
    assert set(pd.read_csv(csv)["id"]) == ids
    parquet = explorer.export("Parquet")
    maps = duckdb.sql(f"select id, coattention_relevance__patches from '{parquet}'").fetchall()
    assert {row[0] for row in maps} == ids and all(len(row[1]) == 2 * 64 for row in maps)
    report = open(explorer.export("HTML report"), encoding="utf-8").read()
    assert "pointing game" in report and report.count("data:image/png;base64") >= 3 and "Worst errors" in report
    assert "download" in explorer.export_link.value
    reset(explorer)


def test_the_default_run_is_made_on_first_show(tmp_path, monkeypatch):
    import widgets.dataset as dataset

    monkeypatch.setenv("VLE_WORKBENCH_RUNS", str(tmp_path))
    monkeypatch.setattr(dataset, "DEFAULT_SCENES", 2)
    explorer = dataset.DatasetExplorer()
    assert explorer.table is None  # nothing runs before it is shown
    explorer.ensure_run()
    assert explorer.status.error is None, explorer.status.message.value
    manifest = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
    assert manifest["status"] == "finished" and len(explorer.table) == manifest["stored"] > 0


def test_a_vcr_run_opens_and_explains_live(tmp_path):
    from widgets import DatasetExplorer

    run_batch(shapes_source(SEED, 3, kind="vcr"), "vle-tiny-shapes-vcr-q2a", str(tmp_path), methods=["rollout"],
              progress=False)
    explorer = DatasetExplorer(str(tmp_path))
    explorer.ensure_run()
    assert explorer.status.error is None, explorer.status.message.value
    explorer.live_method.value = "coattention_relevance"
    explorer.live_button.click()
    assert explorer.status.error is None and "live coattention_relevance" in explorer.example_text.value


def test_a_missing_run_is_reported_in_the_widget(tmp_path):
    from widgets import DatasetExplorer

    explorer = DatasetExplorer(str(tmp_path / "nothing"))
    explorer.ensure_run()
    assert explorer.status.error is not None and "no finished examples" in explorer.status.message.value


# -- vle.analysis ------------------------------------------------------------------------------------------------

def test_binary_bootstrap_matches_scipy_resampling():
    values = (np.random.default_rng(3).random(400) < 0.7).astype(float)
    ours = analysis.bootstrap_mean(values)
    reference = stats.bootstrap((values,), np.mean, n_resamples=4000, method="percentile",
                                rng=np.random.default_rng(1)).confidence_interval
    assert ours["how"] == "bootstrap (binomial)"
    assert ours["low"] == pytest.approx(reference.low, abs=0.01) and ours["high"] == pytest.approx(reference.high,
                                                                                                    abs=0.01)
    continuous = np.random.default_rng(4).random(300)
    assert analysis.bootstrap_mean(continuous)["how"] == "bootstrap"
    large = np.random.default_rng(5).random(20_000)
    normal = analysis.bootstrap_mean(large)
    assert normal["how"] == "normal" and normal["low"] < large.mean() < normal["high"]
    assert analysis.bootstrap_mean([])["value"] is None and analysis.bootstrap_mean([1.0])["low"] == 1.0


def test_calibration_error_by_hand():
    probability = np.array([0.95, 0.92, 0.55, 0.58, 0.15])
    correct = np.array([1, 0, 1, 1, 0])
    ece, bins = analysis.calibration(probability, correct)
    by_hand = (2 * abs(0.5 - 0.935) + 2 * abs(1.0 - 0.565) + 1 * abs(0.0 - 0.15)) / 5
    assert ece == pytest.approx(by_hand) and sum(b["count"] for b in bins) == 5


@pytest.mark.parametrize("width", [40, 700])  # the covariance's eigenvectors, and randomised subspace iteration
def test_pca_agrees_with_an_exact_svd(width):
    rng = np.random.default_rng(0)
    spread = np.concatenate([[10.0, 6.0], np.geomspace(3, 0.1, width - 2)])  # two clear principal directions
    vectors = rng.standard_normal((800, width)) @ np.diag(spread)
    ours = analysis.project(vectors.astype(np.float32))
    centred = vectors - vectors.mean(0)
    exact = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    for column in range(2):
        assert abs(np.corrcoef(ours[:, column], exact[:, column])[0, 1]) > 0.999
    assert np.array_equal(ours, analysis.project(vectors.astype(np.float32)))  # deterministic


def test_confusion_counts_every_known_answer():
    table = pd.DataFrame({"truth": ["a", "a", "b", None, "c"], "prediction": ["a", "b", "b", "a", "z"]})
    labels, matrix = analysis.confusion(table, top=3)
    assert matrix.sum() == 4 and labels[-1] == "other" and matrix[labels.index("a"), labels.index("b")] == 1
