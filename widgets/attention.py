"""``AttentionExplorer``: the fusion's cross-attention, both directions, any layer and attention head.

    from widgets import AttentionExplorer
    AttentionExplorer()

Run records every fusion cross-attention map once (``vle.explain`` raw attention keeps them all); clicking through
words, patches, layers and attention heads then only redraws. A click on the small picture picks the patch under the
pointer and shows where it attends among the words.
"""

from __future__ import annotations

import ipywidgets as W

from viz import crop_region, plot_attention_grid, plot_patch_attention, plot_word_attention
from viz.interventions import render_edit_canvas

from ._clicks import ClickableImage
from ._common import (DPI, ImagePicker, Quiet, RunsWhenShown, Status, describe_error, figure_png, fixed_axes,
                      layer_choices, load_session, picture, timed)

DIRECTIONS = ("word → image", "patch → words", "layer × head grid")


class AttentionExplorer(RunsWhenShown, W.VBox, Quiet):
    """``model``: a shipped name or folder; ``head``: which of its heads to load (a task name of ``vle.HEADS``;
    default: the one the checkpoint was saved as)."""

    def __init__(self, model: str = "vle-tiny-shapes-vqa", head: str | None = None,
                 image: str | None = "shapes_0", text: str = "what size is the green object ?", dpi: int = DPI):
        self.session, self.dpi = load_session(model, head), dpi
        self.model = self.session.model
        self.maps = None  # {"text_to_image": (layers, heads, text_len, image_len), "image_to_text": (..., text_len)}
        self.tokens: tuple[str, ...] = ()
        self._image = None
        self.timings: dict[str, float] = {}
        config = self.model.config
        grid = config.patch_grid

        self.picker = ImagePicker(image)
        self.text = W.Text(value=text, description="text", continuous_update=False, layout=W.Layout(width="34em"))
        self.run_button = W.Button(description="Record attention", button_style="primary", icon="play")
        self.run_button.add_class("vle-run")
        self.status = Status()
        self.status.context = f"weights in {self.session.dtype_choice}"
        self.direction = W.ToggleButtons(options=DIRECTIONS, value=DIRECTIONS[0])
        self.token = W.ToggleButtons(options=[], description="word", style={"button_width": "auto"})
        self.patch = (grid // 2, grid // 2)  # (row, col) of the patch whose attention over the words is shown
        self.patch_picker = ClickableImage("vle-patch-picker", width="192px", on_click=self.click_at)
        self.layer = W.Dropdown(options=layer_choices(config.num_hidden_layers), value="mean", description="layer",
                                layout=W.Layout(width="13em"))
        self.head = W.Dropdown(options=layer_choices(config.num_attention_heads), value="mean", description="head",
                               layout=W.Layout(width="13em"))
        self.opacity = W.FloatSlider(value=0.7, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False)
        self.figure = picture("vle-attention")

        self.run_button.on_click(lambda _: self.run())
        for control in (self.direction, self.token, self.layer, self.head, self.opacity):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([self.picker, W.HBox([self.text, self.run_button]), self.status, self.direction, self.token,
                          W.HBox([self.layer, self.head, self.opacity]),
                          W.HBox([self.figure, W.VBox([W.HTML("click a patch:"), self.patch_picker],
                                                      layout=W.Layout(margin="0 0 0 1em"))])])

    def run(self) -> None:
        with self.status.run(self.run_button, steps=2, text="recording the fusion's attention …") as status:
            if not self.text.value.strip():
                raise ValueError("type a text first")
            image = self.picker.image
            inputs = self.session.prepare(image, self.text.value.strip())
            e = self.session.explain(inputs, method="raw_attention", keep_maps=True)
            # nothing is replaced until everything succeeded: a failed run keeps the last good one on screen
            self._image, self.tokens = image, e.tokens
            self.maps = {key: e.metadata[key] for key in ("text_to_image", "image_to_text")}
            status.step("drawing …")
            choices = [(token.lstrip("▁") or token, index) for index, token in enumerate(self.tokens)]
            content = [index for token, index in choices if token not in ("[CLS]", "[SEP]")]
            with self.quietly():
                self.token.options, self.token.value = choices, content[0] if content else 0
            self._show_picker()
            self.render()

    def click_at(self, x: float, y: float) -> None:
        """A click on the small picture at image pixel (x, y): that patch, towards the words."""
        if self._image is None:
            return
        x0, y0, x1, y1 = crop_region(*self._image.size)
        grid = self.model.config.patch_grid
        if not (x0 <= x < x1 and y0 <= y < y1):
            self.status.show("that is outside the centred square the model sees: click inside the grid")
            return
        self.pick_patch(int((y - y0) / (y1 - y0) * grid), int((x - x0) / (x1 - x0) * grid))

    def pick_patch(self, row: int, col: int) -> None:
        self.patch = (row, col)
        self._show_picker()
        if self.direction.value == DIRECTIONS[1]:
            self.render()
        else:
            self.direction.value = DIRECTIONS[1]  # redraws

    def _show_picker(self) -> None:
        width, height = self._image.size
        scale = max(1, 384 // max(width, height))
        self.patch_picker.show(render_edit_canvas(self._image, scale=scale, grid=self.model.config.patch_grid,
                                                  patch=self.patch, crop=crop_region(width, height)), (width, height))

    def render(self) -> None:
        """Redraw from the recorded maps (no model call)."""

        if self._quiet or self.maps is None or self.token.value is None:
            return
        # viz averages over what is None
        layer, head = (None if v == "mean" else v for v in (self.layer.value, self.head.value))
        with timed(self.timings, "render"):
            try:
                if self.direction.value == DIRECTIONS[0]:
                    figure, ax = fixed_axes()
                    plot_word_attention(self.maps["text_to_image"], self._image, self.token.value, tokens=self.tokens,
                                        layer=layer, head=head, opacity=self.opacity.value, ax=ax)
                elif self.direction.value == DIRECTIONS[1]:
                    figure = plot_patch_attention(self.maps["image_to_text"], self.tokens, self.patch,
                                                  image=self._image, layer=layer, head=head)
                else:
                    figure = plot_attention_grid(self.maps["text_to_image"], self.token.value, tokens=self.tokens,
                                                 image=self._image, opacity=self.opacity.value)
                self.figure.value = figure_png(figure, self.dpi)
            except Exception as error:  # noqa: BLE001

                self.status.show(describe_error(error), "error")
