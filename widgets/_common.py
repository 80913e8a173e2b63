"""What every explorer shares: loading models once, picking an image, showing a figure, running work with progress
and showing errors inside the widget."""

from __future__ import annotations

import html
import io
import json
import os
import time
import traceback
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from transformers.utils import logging

import viz
from viz import figure_to_png
from vle.errors import InputError
from vle.explain import Session
from vle.image_utils import load_image

PICS = Path(__file__).resolve().parent.parent / "pics"
# Pictures are drawn at DPI and shown at SCREEN_PPI CSS pixels per inch of figure: figure text a little larger than
# the page's, a heatmap's 128-pixel scene about 400 pixels wide, and more pixels than shown, so HiDPI screens and
# narrowed panels stay sharp (higher DPIs cost redraw time without showing more)
DPI = 144
SCREEN_PPI = 110
MIN_WIDTH = "480px"  # however narrow the panel: a fixed_axes heatmap shows its 128-pixel scene 384 pixels wide


# -- models ----------------------------------------------------------------------------------------------------------

@contextmanager
def _no_progress_bars():
    """transformers draws a progress bar per checkpoint load: noise inside an app."""

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def load_session(model, head: str | None = None) -> Session:
    """A ``vle.explain.Session``: ``model`` is one already (kept, e.g. on a model of your own), or a shipped/saved
    model by name, loaded once per process (explorers on the same model share it, and its image-feature cache).
    ``head``: a task name of ``vle.HEADS`` (default: the checkpoint's own head)."""
    return model if isinstance(model, Session) else _load_session(model, head)


@lru_cache(maxsize=8)
def _load_session(model: str, head: str | None) -> Session:
    with _no_progress_bars():
        return Session.from_pretrained(model, head=head)


class RunsWhenShown:
    """Mixed into an explorer (before its ipywidgets base): its default example runs once, when it is first shown, so
    a new user sees a result instead of an empty panel. Displaying it calls ``ensure_run()``, and so does the
    workbench when its tab is first selected: tabs nobody opens never run, and the app still opens fast."""

    _shown = False

    def ensure_run(self) -> None:
        """``run()`` the first time only; its errors show in the widget's status line, as on the Run button."""
        if not self._shown:
            self._shown = True
            self.run()

    def _repr_mimebundle_(self, **kwargs):
        # ipywidgets 8 has no on_displayed; this is what IPython calls to display a widget (notebooks and Voilà)
        self.ensure_run()
        return super()._repr_mimebundle_(**kwargs)


class Quiet:
    """For explorers that set their own controls: inside ``quietly()`` their change callbacks return at once."""

    _quiet = False

    @contextmanager
    def quietly(self):
        previous, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = previous


def layer_choices(n: int, extra=(("mean", "mean"),)) -> list[tuple[str, object]]:
    return list(extra) + [(str(i), i) for i in range(n)]


# -- images ----------------------------------------------------------------------------------------------------------

SEED = "(shapes seed)"  # the ImagePicker choice of a generated shapes scene


def scene_names() -> list[str]:
    """The shapes scenes in ``pics/`` (a PNG with its scene JSON beside it; other pictures there are not scenes)."""
    return sorted(p.stem for p in PICS.glob("*.png") if p.with_suffix(".json").is_file())


def scene_record(name: str) -> dict | None:
    """The scene JSON beside ``pics/<name>.png`` (questions, answers, boxes), or None for other images."""
    path = PICS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


class ImagePicker(W.VBox):
    """An image from ``pics/``, a path, or an upload (with ``seeds``, also any shapes scene by its seed). ``image`` is
    a PIL RGB image; ``record`` the scene JSON when the image is a shapes scene (else None), ``scene`` its
    ``vle.shapes.world.Scene``; ``on_change(callback)`` runs the callback with no argument."""

    def __init__(self, value: str | None = None, scenes: list[str] | None = None, seeds: bool = False):
        names = scenes if scenes is not None else scene_names()
        extra = ["(path)", "(upload)"] + ([SEED] if seeds else [])
        self.source = W.Dropdown(options=names + extra, description="image",
                                 value=value if value in names + extra else (names[0] if names else "(path)"))
        self.path = W.Text(placeholder="/path/to/image.png", description="path", continuous_update=False,
                           layout=W.Layout(display="none", width="24em"))
        self.upload = W.FileUpload(accept="image/*", multiple=False, layout=W.Layout(display="none"))
        self.seed = W.BoundedIntText(value=0, min=0, max=2**31 - 1, description="seed",
                                     layout=W.Layout(display="none", width="12em"))
        self.source.add_class("vle-image-source")
        self._callbacks = []
        for control in (self.source, self.path, self.upload, self.seed):
            control.observe(self._changed, names="value")
        super().__init__([W.HBox([self.source, self.path, self.upload, self.seed])])
        self._sync_visibility()

    def _sync_visibility(self) -> None:
        self.path.layout.display = "" if self.source.value == "(path)" else "none"
        self.upload.layout.display = "" if self.source.value == "(upload)" else "none"
        self.seed.layout.display = "" if self.source.value == SEED else "none"

    def _changed(self, _change) -> None:
        self._sync_visibility()
        for callback in self._callbacks:
            callback()

    def on_change(self, callback) -> None:
        self._callbacks.append(callback)

    @property
    def name(self) -> str:
        if self.source.value == "(path)":
            return self.path.value
        if self.source.value == "(upload)":
            return self.upload.value[0]["name"] if self.upload.value else ""
        if self.source.value == SEED:
            return f"shapes scene {self.seed.value}"
        return self.source.value

    @property
    def record(self) -> dict | None:
        if self.source.value == SEED:
            from vle.shapes.make_pics import example_record

            return example_record(self.seed.value)
        return scene_record(self.source.value) if self.source.value not in ("(path)", "(upload)") else None

    @property
    def scene(self):
        """The shapes scene shown (``make_scene`` of its seed: pixel for pixel the picture), or None."""
        from vle.shapes.world import make_scene

        if self.source.value == SEED:
            return make_scene(self.seed.value)
        record = self.record
        return make_scene(record["seed"], record.get("image_size", 128)) if record and "seed" in record else None

    @property
    def image(self) -> Image.Image:
        """The chosen image, read by ``vle``'s one loader (EXIF orientation, 16-bit and float images, bombs and bad
        files handled as everywhere else)."""

        if self.source.value == "(path)":
            if not self.path.value.strip():
                raise ValueError("type the path of an image file, or pick a scene from pics/")
            return load_image(os.path.expanduser(self.path.value.strip()))
        if self.source.value == "(upload)":
            if not self.upload.value:
                raise ValueError("upload an image first (the button next to the image menu)")
            upload = self.upload.value[0]
            return load_image(bytes(upload["content"]), name=f"the upload {upload.get('name', '')}".strip())
        if self.source.value == SEED:
            return self.scene.image
        return load_image(PICS / f"{self.source.value}.png")


# -- output ----------------------------------------------------------------------------------------------------------

def figure_png(figure, dpi: int = DPI) -> bytes:
    return figure_to_png(figure, dpi=dpi)


def fixed_axes(figsize=(4.6, 4.2)):
    """(figure, axes) with a fixed layout: the viz default (constrained layout) costs tens of milliseconds per draw,
    too much for a slider that redraws on every move."""

    figure = Figure(figsize=figsize)
    return figure, figure.add_axes((0.01, 0.02, 0.98, 0.88))


def picture(css_class: str, min_width: str | None = MIN_WIDTH) -> W.Image:
    """An Image widget for ``figure_png`` pictures: SCREEN_PPI pixels per inch of figure, narrowed to the width
    available down to ``min_width``, its aspect kept (flex-start: a box would stretch it to the row's height)."""
    image = W.Image(format="png", layout=W.Layout(align_self="flex-start", max_width="100%", min_width=min_width,
                                                  height="auto", display="none"))
    image.add_class(css_class)
    image.observe(lambda change: _fit_picture(image, bytes(change["new"])), names="value")
    return image


def _fit_picture(image: W.Image, png: bytes) -> None:
    image.layout.display = "" if png else "none"  # an empty Image shows as a broken-image icon
    if png:
        with Image.open(io.BytesIO(png)) as header:  # reads the header only; matplotlib stores its DPI there
            inches = header.width / header.info.get("dpi", (DPI,))[0]
        image.width = str(round(inches * SCREEN_PPI))


CELL_STYLE = "text-align:left;padding:1px 8px"  # table cells in widget HTML, padded inline (no style sheet)


def html_table(rows, header=None, css_class: str = "") -> str:
    """``viz.html_table`` for widget HTML: cells are HTML already, padded inline (no style sheet in a widget)."""
    return viz.html_table(rows, header, escape=False, cell_style=CELL_STYLE, css_class=css_class)


def score_bar(value: float, width: int = 120, color: str = "#4c72b0") -> str:
    filled = int(round(max(0.0, min(1.0, value)) * width))
    return (f"<span style='display:inline-block;width:{width}px;height:10px;background:#eee'>"
            f"<span style='display:block;width:{filled}px;height:10px;background:{color}'></span></span>")


def method_note() -> W.HTML:
    """The default method's caveat (``DEFAULT_METHOD_NOTE``) beside a method list; hidden when there is none."""
    from vle.explain.session import DEFAULT_METHOD, DEFAULT_METHOD_NOTE

    note = W.HTML(f"<span style='color:#555;font-size:90%'>default {html.escape(DEFAULT_METHOD)}: "
                  f"{html.escape(DEFAULT_METHOD_NOTE)}</span>", layout=W.Layout(max_width="30em"))
    note.add_class("vle-method-note")
    if not DEFAULT_METHOD_NOTE:
        note.layout.display = "none"
    return note


class Status(W.VBox):
    """A progress bar and a message line. ``run(button, steps)`` wraps heavy work: the button is disabled and the
    bar shown while it runs; an exception is shown here, in words, and the widget stays usable."""

    def __init__(self):
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(display="none", width="16em"))
        self.message = W.HTML()
        self.message.add_class("vle-status")
        self.error = None
        self.context = ""  # what the runs use, e.g. the model's float type, shown after "done"
        super().__init__([self.progress, self.message])

    def show(self, text: str, kind: str = "info") -> None:
        color = {"info": "#555", "error": "#b00020", "ok": "#1b5e20"}[kind]
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def step(self, text: str) -> None:
        self.progress.value = min(self.progress.value + 1, self.progress.max)
        self.show(text)

    @contextmanager
    def run(self, button: W.Button | None, steps: int, text: str = "working …"):
        self.error = None
        if button is not None:
            button.disabled = True
        self.progress.max, self.progress.value, self.progress.layout.display = max(1, steps), 0, ""
        self.show(text)
        started = time.perf_counter()
        try:
            yield self
        except Exception as error:  # noqa: BLE001  (any failure is shown in the widget, not only in a log)
            self.error = error
            self.show(describe_error(error), "error")
        else:
            self.show(f"done in {time.perf_counter() - started:.2f} s" + (f" · {self.context}" if self.context else ""),
                      "ok")
        finally:
            self.progress.layout.display = "none"
            if button is not None:
                button.disabled = False


def describe_error(error: BaseException) -> str:
    """The error in one line a user can act on; the traceback's last frame for unexpected kinds."""

    if isinstance(error, InputError):
        return str(error)
    if isinstance(error, (ValueError, FileNotFoundError, TypeError, KeyError, IndexError, OSError, RuntimeError)):
        return f"{type(error).__name__}: {error}"
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    suffix = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(error).__name__}: {error}{suffix}"


def as_array(image) -> np.ndarray:
    return np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)


@contextmanager
def timed(store: dict, key: str):
    """Record the milliseconds the block took in ``store[key]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        store[key] = (time.perf_counter() - started) * 1000.0
