"""``DatasetExplorer``: a batch run (``vle-workbench batch``) explored as a whole: the examples in a data grid
(ipydatagrid: sort and filter in the browser, fluid at 100,000 rows), filters by slice field, right or wrong,
probability and words, the slice's summary (accuracy, calibration, answer confusion, each method's pointing game with
95% intervals), its mean relevance map and worst errors, a 2-D projection of the pooled representations (bqplot:
a dragged box or lasso filters the table), and one example opened with its stored explanation and any method live.

    from widgets import DatasetExplorer
    DatasetExplorer("runs/shapes")          # a run folder; with no folder, a small held-out shapes run (made once)
"""

from __future__ import annotations

import base64
import html
import json
import os
import threading
import time

import bqplot
import ipywidgets as W
import numpy as np
import pandas as pd
from bqplot import interacts
from ipydatagrid import DataGrid
from scipy.spatial import cKDTree

from viz import plot_patch_relevance, token_spans_html
from viz.dataset import (gallery_html, plot_confusion, plot_mean_map, plot_reliability, plot_slice_overview,
                         slice_report_html, slice_summary_html)
from vle import analysis
from vle.errors import read_json
from vle.explain import VCRChoice, VQAAnswer
from vle.store import Run, decode, open_run

from ._common import (CELL_STYLE, DPI, RunsWhenShown, Status, describe_error, figure_png, fixed_axes, load_session,
                      picture)

ALL = "(all)"
RIGHT_OR_WRONG = {"all": None, "right": True, "wrong": False}
GRID_COLUMNS = ("id", "question", "truth", "prediction", "probability", "margin", "correct")
PICTURE_DELAY_S = 0.25  # how long a slice's filters must stay put before its pictures are drawn
SHOWN_POINTS = 5_000  # points drawn in the projection (an even sample); a selection keeps undrawn ones too
DEFAULT_SCENES = 50


def default_run(model: str = "vle-tiny-shapes-vqa", seed: int | None = None, scenes: int = DEFAULT_SCENES) -> str:
    """Where the app's default run lives: ``$VLE_WORKBENCH_RUNS`` or ``~/.cache/vle-workbench/runs``."""
    from vle.shapes.evaluate import DEFAULT_SEED

    root = os.environ.get("VLE_WORKBENCH_RUNS") or os.path.join(os.path.expanduser("~"), ".cache", "vle-workbench",
                                                                 "runs")
    return os.path.join(root, f"{model}-shapes-{DEFAULT_SEED if seed is None else seed}-{scenes}")


class DatasetExplorer(RunsWhenShown, W.VBox):
    """``run``: a run folder or ``vle.store.Run`` (None: the default held-out shapes run, made on first show).
    ``model``: the model live explanations run on (default: the run's own). ``on_open(row, image)``: called when an
    example is opened, e.g. to show it in the VQA explorer. ``projection``: ``pca`` or ``umap`` (``umap-learn``)."""

    def __init__(self, run=None, model: str | None = None, on_open=None, projection: str = "pca", dpi: int = DPI):
        self.run_source, self.model_name, self.on_open, self.dpi = run, model, on_open, dpi
        self.projection_method = projection  # "pca", or "umap" with umap-learn installed
        self.run_data: Run | None = None
        self.table = self.filtered = None
        self.xy, self.box_ids, self.current = None, None, None
        self.timings: dict[str, float] = {}
        self.background = True  # the slice's pictures drawn in a thread (False: before apply returns)
        self._generation, self._thread, self._maps, self._drawn = 0, None, {}, np.zeros(0, dtype=int)

        self.status = Status()
        self.folder = W.Text(value="" if run is None or isinstance(run, Run) else str(run), description="run",
                             placeholder="a batch run folder (empty: the default shapes run)",
                             layout=W.Layout(width="36em"))
        self.open_button = W.Button(description="Open", button_style="primary", icon="folder-open")
        self.open_button.add_class("vle-run")
        self.field = W.Dropdown(description="slice", options=[ALL], layout=W.Layout(width="16em"))
        self.value = W.Dropdown(description="value", options=[ALL], layout=W.Layout(width="16em"))
        self.right = W.ToggleButtons(options=list(RIGHT_OR_WRONG), value="all", style={"button_width": "5em"})
        self.right.add_class("vle-right-wrong")
        self.probability = W.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.01, description="probability",
                                              continuous_update=False, readout_format=".2f")
        self.search = W.Text(description="words", placeholder="in the question", continuous_update=False)
        self.method = W.Dropdown(description="method", options=[])  # whose maps the pictures and example show
        self.color_by = W.Dropdown(description="colour", options=["right or wrong"])
        self.selector = W.ToggleButtons(options=["box", "lasso"], value="box", style={"button_width": "4.5em"},
                                        tooltips=["drag a box", "draw a lasso"])
        self.selector.add_class("vle-selector")
        self.clear_box = W.Button(description="Clear selection", icon="times", disabled=True)
        self.grid = DataGrid(_empty_frame(), selection_mode="row", layout=W.Layout(height="330px", width="100%"),
                             base_column_size=90, auto_fit_columns=True, header_visibility="column")
        self.grid.add_class("vle-dataset-grid")
        self.summary = W.HTML()
        self.summary.add_class("vle-dataset-summary")
        self.overview, self.mean_map = picture("vle-overview"), picture("vle-mean-map", min_width=None)
        self.gallery = W.HTML()
        self.gallery.add_class("vle-gallery")
        self.scatter, self.projection = self._projection_figure()
        self.example_figure = picture("vle-example")
        self.example_text = W.HTML()
        self.example_text.add_class("vle-example-text")
        self.live_method = W.Dropdown(description="live", options=[])
        self.live_button = W.Button(description="Explain live", icon="play")
        self.open_elsewhere = W.Button(description="Open in VQA explorer", icon="external-link",
                                       layout=W.Layout(display="" if on_open else "none"))
        self.export_format = W.Dropdown(options=["CSV", "Parquet", "HTML report"], description="export",
                                        layout=W.Layout(width="14em"))
        self.export_button = W.Button(description="Export slice", icon="download")
        self.export_link = W.HTML()
        self.export_link.add_class("vle-export")

        self.open_button.on_click(lambda _: self.run())
        self.field.observe(lambda _: self._field_changed(), names="value")
        for control in (self.value, self.right, self.probability, self.search, self.method):
            control.observe(lambda _: self.apply(), names="value")
        self.color_by.observe(lambda _: self._color_points(), names="value")
        self.clear_box.on_click(lambda _: self._clear_box())
        self.selector.observe(lambda _: self._selector_changed(), names="value")
        self.grid.on_cell_click(self._cell_clicked)
        self.live_button.on_click(lambda _: self.explain_live())
        self.open_elsewhere.on_click(lambda _: self._open_elsewhere())
        self.export_button.on_click(lambda _: self.export())

        filters = W.HBox([self.field, self.value, self.right, self.probability, self.search],
                         layout=W.Layout(flex_flow="row wrap"))
        pictures = W.HBox([self.overview, self.mean_map], layout=W.Layout(flex_flow="row wrap"))
        example = W.HBox([self.example_figure, W.VBox([self.example_text, W.HBox(
            [self.live_method, self.live_button, self.open_elsewhere])])], layout=W.Layout(flex_flow="row wrap"))
        super().__init__([
            W.HBox([self.folder, self.open_button]), self.status, filters,
            W.HBox([self.method, self.color_by, self.selector, self.clear_box], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([W.Box([self.grid], layout=W.Layout(flex="3 1 30em", min_width="24em")),
                    W.Box([self.summary], layout=W.Layout(flex="2 1 20em"))]),
            pictures, W.HBox([self.projection]), W.HTML("<b>Worst errors of the slice</b> (wrong answers given with "
                                                        "the highest probability)"), self.gallery,
            W.HTML("<b>Example</b> (click a row of the table)"), example,
            W.HBox([self.export_format, self.export_button, self.export_link])])

    # -- loading ---------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Open the run in the folder box (or the one given, or the default run, made first if missing)."""
        with self.status.run(self.open_button, steps=3, text="opening the run …"):
            folder = self.folder.value.strip() or self.run_source
            if folder is None:
                folder = self._default_run()
            self.load(folder)

    def _default_run(self) -> str:
        from vle.batch import run_batch
        from vle.data import shapes_source
        from vle.shapes.evaluate import DEFAULT_SEED

        folder = default_run()
        manifest = os.path.join(folder, "manifest.json")
        if not os.path.isfile(manifest) or read_json(manifest, "run manifest").get("status") != "finished":
            def progress(done, total):
                self.status.progress.max, self.status.progress.value = total or 1, done
                self.status.show(f"a first run over {DEFAULT_SCENES} held-out scenes: {done} of {total} questions")
            run_batch(shapes_source(DEFAULT_SEED, DEFAULT_SCENES), "vle-tiny-shapes-vqa", folder, progress=progress)
        return folder

    def load(self, run) -> None:
        """Show ``run`` (a folder or a ``Run``): the table, the filters, the projection."""
        started = time.perf_counter()
        run = run if isinstance(run, Run) else open_run(os.path.expanduser(str(run)))
        table = analysis.summary_table(run)
        self.status.step("projecting the pooled representations …")
        ids, vectors = analysis.pooled(run)
        xy = analysis.project(vectors, self.projection_method) if len(vectors) else np.zeros((0, 2), np.float32)
        position = {example_id: i for i, example_id in enumerate(ids)}
        order = [position.get(example_id) for example_id in table["id"]]
        self.xy = np.full((len(table), 2), np.nan, dtype=np.float32)
        found = np.array([i is not None for i in order], dtype=bool)
        self.xy[found] = xy[np.array([i for i in order if i is not None], dtype=int)]
        self.run_data, self.table, self.box_ids = run, table, None
        fields = run.slice_fields
        shown = table[list(GRID_COLUMNS[:2]) + [f"slice_{f}" for f in fields] + list(GRID_COLUMNS[2:])]
        self.grid.data = shown.round({"probability": 3, "margin": 3}).rename(
            columns=lambda c: c.removeprefix("slice_"))
        with self.hold_trait_notifications():
            self.field.options = [ALL] + fields
            self.field.value = fields[0] if fields else ALL
            self.method.options = run.methods
            self.method.value = run.methods[0] if run.methods else None
            self.color_by.options = ["right or wrong"] + fields
        session = self._session()
        target = VCRChoice(0) if run.manifest.get("kind") == "vcr" else VQAAnswer(0)
        self.live_method.options = session.methods_for(target)
        self.live_method.value = "coattention_relevance" if "coattention_relevance" in self.live_method.options \
            else self.live_method.options[0]
        self._maps = {}
        self._color_points()
        self.status.context = f"{len(table)} examples, {run.manifest.get('model', 'a model')}"
        self._filter(background=False)  # the first slice is drawn before the run counts as open
        self.timings["open"] = time.perf_counter() - started
        wrong = self.filtered[self.filtered["correct"].eq(False)]
        self.open_example((wrong if len(wrong) else self.filtered)["id"].iloc[0] if len(self.filtered) else None)

    def _session(self):
        model = self.model_name or self.run_data.manifest.get("model", "vle-tiny-shapes-vqa")
        return load_session(model)

    # -- filtering -------------------------------------------------------------------------------------------------

    def _field_changed(self) -> None:
        field = self.field.value
        values = [] if field == ALL or self.table is None else sorted(self.table[f"slice_{field}"].dropna().unique())
        self.value.options = [ALL] + values
        self.value.value = ALL

    def selection(self) -> dict:
        """The current filter, as ``vle.analysis.select`` takes it."""
        field, value = self.field.value, self.value.value
        return {"slices": {field: value} if ALL not in (field, value) else {},
                "correct": RIGHT_OR_WRONG[self.right.value], "probability": tuple(self.probability.value),
                "search": self.search.value, "ids": self.box_ids}

    def apply(self, background: bool | None = None) -> None:
        """Filter: the table in the browser (the grid's own transforms: nothing re-sent), the summaries here. A
        failure is shown in the widget, which stays usable."""
        if self.table is None:
            return
        try:
            self._filter(background)
        except Exception as error:  # noqa: BLE001
            self.status.show(describe_error(error), "error")

    def _filter(self, background: bool | None) -> None:
        started = time.perf_counter()
        mask = analysis.select(self.table, **self.selection())
        self.filtered = self.table[mask]
        self.grid.transform(self._grid_filters())
        self.timings["filter"] = time.perf_counter() - started
        self.render_summary(background)

    def _grid_filters(self) -> list[dict]:
        selection, filters = self.selection(), []
        for field, value in selection["slices"].items():
            filters.append({"type": "filter", "column": field, "operator": "=", "value": value})
        if selection["correct"] is not None:
            filters.append({"type": "filter", "column": "correct", "operator": "=", "value": selection["correct"]})
        if selection["probability"] != (0.0, 1.0):
            filters.append({"type": "filter", "column": "probability", "operator": "between",
                            "value": list(selection["probability"])})
        for word in selection["search"].lower().split():
            filters.append({"type": "filter", "column": "question", "operator": "stringContains", "value": word})
        if selection["ids"] is not None:
            filters.append({"type": "filter", "column": "id", "operator": "in", "value": list(selection["ids"])})
        return filters

    def sort(self, column: str, descending: bool = False) -> None:
        """Sort the table in the browser (as its column menu does)."""
        self.grid.transform(self._grid_filters() + [{"type": "sort", "column": column, "desc": descending}])

    # -- the slice -------------------------------------------------------------------------------------------------

    def render_summary(self, background: bool | None = None) -> None:
        """The slice's numbers at once, then its pictures (calibration and answers, mean map, worst errors): in a
        thread of their own once the run is open (``background``), so the next filter need not wait for them; a
        newer filter's pictures replace an older one's, which stops drawing."""
        started = time.perf_counter()
        self.summary_data = analysis.slice_summary(self.filtered, self.run_data.methods)
        self.summary.value = "".join(slice_summary_html(self.summary_data, len(self.table), cell_style=CELL_STYLE))
        self.timings["summary"] = time.perf_counter() - started
        self._generation += 1
        work = (self.filtered, self.summary_data, self.method.value, self._generation)
        if background if background is not None else self.background:
            # after a pause: filters changed in quick succession (typing, a slider) draw only the last slice
            self._thread = threading.Timer(PICTURE_DELAY_S, self.render_pictures, args=work)
            self._thread.daemon = True
            self._thread.start()
        else:
            self.render_pictures(*work)

    def render_pictures(self, table, summary: dict, method: str | None, generation: int) -> None:
        started = time.perf_counter()
        try:
            labels, matrix = analysis.confusion(table)
            pictures = [(self.overview, figure_png(plot_slice_overview(summary["reliability"], summary["ece"],
                                                                       labels, matrix), self.dpi))]
            if generation == self._generation:
                mean = self._mean_map(table, method) if method and len(table) else None
                pictures.append((self.mean_map, b"" if mean is None else figure_png(
                    plot_mean_map(mean, title=f"mean {method}"), self.dpi)))
            if generation == self._generation:
                pictures.append((self.gallery, self.worst_errors_html(table, method)))
            for widget, value in pictures:
                if generation != self._generation:  # a newer filter is drawing
                    return
                widget.value = value
            self.timings["figures"] = time.perf_counter() - started
        except Exception as error:  # noqa: BLE001  (shown in the widget, as every explorer's errors)
            self.status.show(f"drawing the slice: {describe_error(error)}", "error")

    def wait(self) -> None:
        """Until the current slice's pictures are drawn."""
        if self._thread is not None:
            self._thread.join()

    def _mean_map(self, table, method: str) -> np.ndarray:
        if method not in self._maps:  # one scan of the column, then every slice is averaged in memory
            ids, maps = analysis.all_maps(self.run_data, method)
            self._maps[method] = (pd.Index(ids), maps)
        index, maps = self._maps[method]
        rows = index.get_indexer(table["id"])
        return analysis.average_maps(maps[rows[rows >= 0]])

    def worst_errors_html(self, table=None, method: str | None = None, count: int = 8) -> str:
        table = self.filtered if table is None else table
        method = method or self.method.value
        if not method:
            return ""
        worst = analysis.worst_errors(table, count)
        ids, maps = analysis.stored_maps(self.run_data, worst["id"], method)
        refs = dict(zip(worst["id"], worst["image"]))
        captions = [f"{q} → {p} ({pr:.2f}), truth {t}" for q, p, pr, t in
                    zip(worst["question"], worst["prediction"], worst["probability"], worst["truth"])]
        return gallery_html([self.run_data.image(i, refs[i]) for i in ids], list(maps), captions)

    # -- projection ------------------------------------------------------------------------------------------------

    def _projection_figure(self):
        x_scale, y_scale = bqplot.LinearScale(), bqplot.LinearScale()
        color = bqplot.OrdinalColorScale(colors=["#2e7d32", "#c62828"])
        scatter = bqplot.Scatter(x=[], y=[], color=[], scales={"x": x_scale, "y": y_scale, "color": color},
                                 default_size=8, stroke=None, opacity=[0.6], selected_style={"opacity": 1.0},
                                 unselected_style={"opacity": 0.15})
        brush = interacts.BrushSelector(x_scale=x_scale, y_scale=y_scale, marks=[scatter], color="#555555")
        brush.observe(self._brushed, names="brushing")
        lasso = interacts.LassoSelector(x_scale=x_scale, y_scale=y_scale, marks=[scatter], color="#555555")
        scatter.observe(self._lassoed, names="selected")
        figure = bqplot.Figure(marks=[scatter], interaction=brush, title="pooled representations: select a region",
                               layout=W.Layout(width="430px", height="380px"),
                               fig_margin={"top": 40, "bottom": 20, "left": 20, "right": 20})
        figure.add_class("vle-projection")
        self.brush, self.lasso = brush, lasso
        return scatter, figure

    def _color_points(self) -> None:
        if self.table is None:
            return
        keep = self._drawn = np.linspace(0, len(self.table) - 1, min(len(self.table), SHOWN_POINTS)).astype(int)
        if self.color_by.value == "right or wrong":
            groups = self.table["correct"].map({True: "right", False: "wrong"}).fillna("no truth").to_numpy()
        else:
            groups = self.table[f"slice_{self.color_by.value}"].astype(str).to_numpy()
        domain = sorted(set(groups.tolist()))
        palette = ["#2e7d32", "#c62828", "#9e9e9e"] if self.color_by.value == "right or wrong" else [
            "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
            "#64b5cd"]
        with self.scatter.hold_sync():
            self.scatter.scales["color"].domain = domain
            self.scatter.scales["color"].colors = palette[:max(len(domain), 1)]
            self.scatter.x, self.scatter.y = self.xy[keep, 0], self.xy[keep, 1]
            self.scatter.color = groups[keep]

    def _brushed(self, change) -> None:
        if change["new"] or self.table is None:  # act when the drag ends
            return
        self.select_box(self.brush.selected_x, self.brush.selected_y)

    def select_box(self, x_range, y_range) -> None:
        """Keep the examples whose projected point lies in the box (all of them, drawn or not)."""
        if x_range is None or y_range is None or len(x_range) < 2:
            return
        (x0, x1), (y0, y1) = sorted(map(float, x_range)), sorted(map(float, y_range))
        inside = (self.xy[:, 0] >= x0) & (self.xy[:, 0] <= x1) & (self.xy[:, 1] >= y0) & (self.xy[:, 1] <= y1)
        self.box_ids = set(self.table["id"][inside])
        self.clear_box.disabled = False
        self.apply()

    def _selector_changed(self) -> None:
        self._clear_box()
        self.projection.interaction = self.lasso if self.selector.value == "lasso" else self.brush

    def _lassoed(self, change) -> None:
        if self.table is None or self.projection.interaction is not self.lasso or change["new"] is None:
            return
        self.select_points(change["new"])

    def select_points(self, drawn) -> None:
        """Keep the examples inside a lasso, given the drawn points it holds (indices into the drawn sample): every
        example whose nearest drawn point is one of them (all of them exactly, when every point is drawn)."""
        chosen = np.zeros(len(self._drawn), dtype=bool)
        chosen[np.asarray(list(drawn), dtype=int)] = True
        if len(self._drawn) == len(self.table):
            inside = chosen
        else:  # each undrawn example goes with its nearest drawn neighbour
            finite = np.isfinite(self.xy).all(axis=1)
            nearest = cKDTree(self.xy[self._drawn]).query(np.where(finite[:, None], self.xy, 0.0))[1]
            inside = chosen[nearest] & finite
        self.box_ids = set(self.table["id"][inside])
        self.clear_box.disabled = False
        self.apply()

    def _clear_box(self) -> None:
        self.box_ids, self.clear_box.disabled = None, True
        self.brush.reset()
        if self.scatter.selected is not None:
            self.scatter.selected = None
        self.apply()

    # -- one example -----------------------------------------------------------------------------------------------

    def _cell_clicked(self, cell: dict) -> None:
        row = cell.get("primary_key_row")
        if row is None or self.table is None:
            return
        try:
            self.open_example(self.grid.data.iloc[int(row)]["id"])
        except Exception as error:  # noqa: BLE001  (shown in the widget, which keeps the last example)
            self.status.show(describe_error(error), "error")

    def open_example(self, example_id) -> None:
        """Show one example with its stored explanation (no model run)."""
        if example_id is None:
            self.current, self.example_text.value, self.example_figure.value = None, "", b""
            return
        started = time.perf_counter()
        row = self.run_data.row(example_id)
        image = self.run_data.image(example_id, row["image"])
        method = self.method.value
        self.current = {"row": row, "image": image}
        self.open_elsewhere.disabled = row["kind"] != "vqa"
        if method:
            scores = decode(row[f"{method}__patches"], (row["grid"], row["grid"]))
            self._show_example(image, scores, row["words"], row[f"{method}__words"], f"stored {method}")
        else:
            self._show_example(image, None, row["words"] or [], [], "no stored explanation")
        self.timings["open_example"] = time.perf_counter() - started

    def _show_example(self, image, scores, words, word_scores, what: str) -> None:
        row = self.current["row"]
        if scores is not None:
            figure, ax = fixed_axes((3.6, 3.4))  # a fixed layout: quick to draw on every click
            plot_patch_relevance(scores, image, title=what, colorbar=False, ax=ax)
            self.example_figure.value = figure_png(figure, self.dpi)
        top = "".join(f"<li>{html.escape(a['answer'])} ({a['probability']:.3f})</li>" for a in row["top_k"])
        verdict = {True: "✔ right", False: "✘ wrong", None: "no truth"}[row["correct"]]
        words_html = token_spans_html(list(words), np.asarray(word_scores, dtype=float)) if len(word_scores) else ""
        self.example_text.value = (
            f"<div><b>{html.escape(row['id'])}</b> · {html.escape(row['question'])}</div>"
            f"<div>prediction <b>{html.escape(row['prediction'])}</b> ({row['probability']:.3f}) · truth "
            f"{html.escape(str(row['truth']))} · {verdict}</div><ol>{top}</ol><div>{html.escape(what)}: "
            f"{words_html}</div>")

    def explain_live(self) -> None:
        """Explain the open example's prediction with the chosen method, through the session layer."""
        if self.current is None:
            return
        with self.status.run(self.live_button, steps=1, text=f"explaining with {self.live_method.value} …"):
            row, image, session = self.current["row"], self.current["image"], self._session()
            if row["kind"] == "vcr":
                inputs = session.prepare_vcr(json.loads(row["annotation"]), image, json.loads(row["metadata"]))
                explanation = session.explain(inputs, target=VCRChoice(int(row["prediction_index"])),
                                              method=self.live_method.value)
            else:
                inputs = session.prepare(image, row["question"])
                explanation = session.explain(inputs, answer=int(row["prediction_index"]),
                                              method=self.live_method.value)
            self._show_example(image, explanation.patch_scores, explanation.words, explanation.word_scores,
                               f"live {self.live_method.value}")

    def _open_elsewhere(self) -> None:
        if self.current is not None and self.on_open is not None:
            self.on_open(self.current["row"], self.current["image"])

    # -- export ----------------------------------------------------------------------------------------------------

    def export(self, kind: str | None = None) -> str:
        """Write the current slice (CSV, Parquet, or the HTML report) into the run's ``exports`` folder and offer it
        as a download link; returns the file's path."""
        kind = kind or self.export_format.value
        with self.status.run(self.export_button, steps=1, text=f"exporting {len(self.filtered)} examples …"):
            folder = os.path.join(self.run_data.root, "exports")
            os.makedirs(folder, exist_ok=True)
            stem = os.path.join(folder, "slice-" + time.strftime("%Y%m%d-%H%M%S"))
            if kind == "CSV":
                path = stem + ".csv"
                self.filtered.drop(columns=["top_k", "answers", "words"], errors="ignore").to_csv(path, index=False)
            elif kind == "Parquet":  # every stored column, maps included, read by DuckDB from the parts
                path = stem + ".parquet"
                self.run_data.query(f"copy (select * from examples where id in (select unnest(?))) to '{path}' "
                                    "(format parquet)", [self.filtered["id"].tolist()])
            else:
                path = stem + ".html"
                slice_report_html(self.describe(), self.summary_data, self.report_figures(), path,
                                  extra_html="<h2>Worst errors</h2>" + self.worst_errors_html(self.filtered))
            with open(path, "rb") as handle:
                data = handle.read()
            link = (f"<a download='{os.path.basename(path)}' href='data:application/octet-stream;base64,"
                    f"{base64.b64encode(data).decode()}'>download</a>") if len(data) < 30_000_000 else ""
            self.export_link.value = f"{html.escape(path)} {link}"
        return path

    def describe(self) -> str:
        selection = self.selection()
        parts = [f"{k} = {v}" for k, v in selection["slices"].items()]
        parts += [] if selection["correct"] is None else ["right" if selection["correct"] else "wrong"]
        parts += [] if selection["probability"] == (0.0, 1.0) else [
            "probability {:.2f}–{:.2f}".format(*selection["probability"])]
        parts += [f'"{selection["search"]}"'] if selection["search"].strip() else []
        parts += [] if selection["ids"] is None else [f"{len(selection['ids'])} picked in the projection"]
        return f"Slice of {os.path.basename(self.run_data.root)}: " + (", ".join(parts) or "every example")

    def report_figures(self) -> dict:
        table, method = self.filtered, self.method.value
        labels, matrix = analysis.confusion(table)
        figures = {"reliability": plot_reliability(self.summary_data["reliability"], self.summary_data["ece"]),
                   "answers": plot_confusion(labels, matrix)}
        if method and len(table):
            figures[f"mean {method}"] = plot_mean_map(self._mean_map(table, method), title=f"mean {method}")
        return figures


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({column: [] for column in GRID_COLUMNS})
