"""``HeadGrid``: the fusion's attention heads as buttons, one layer × head grid per attention site kind (text self,
text cross, image self, image cross). Each cell shows, once a sweep has run, how much the answer's probability
changes with that head ablated (coloured on a diverging scale centred on zero); clicking it toggles the head's
ablation.

Plain ``Button``s, not a bqplot ``GridHeatMap``: a button is one DOM element with a click, its background colour is a
style attribute, and it can be pressed from Python (``.click()``) and from a browser test (a CSS class per cell)
alike; a grid heat map's click selection lives in SVG and has no per-cell handle.
"""

from __future__ import annotations

import html

import ipywidgets as W

from viz.interventions import SITE_KINDS, ablation_cell_colors
OFF = "✕"  # marks an ablated head


def cell_class(site: str, head: int) -> str:
    """The CSS class of a cell: fusion.text.0.cross_attention head 1 → vle-head-text-0-cross-1."""
    _, stream, layer, kind = site.split(".")
    return f"vle-head-{stream}-{layer}-{kind.split('_')[0]}-{head}"


class HeadGrid(W.VBox):
    """``layers`` × ``heads`` cells for each of the four site kinds. ``on_toggle()`` runs after a cell is toggled;
    ``ablated()`` is what ``vle.explain.interventions.ablate`` takes."""

    def __init__(self, layers: int, heads: int, on_toggle=None):
        self.on_toggle = on_toggle
        self.chosen: set[tuple[str, int]] = set()
        self.effects: dict[tuple[str, int], dict] = {}
        self.buttons: dict[tuple[str, int], W.Button] = {}
        blocks = []
        for stream, kind, title in SITE_KINDS:
            cells = [W.HTML("")] + [W.HTML(f"<span style='font-size:0.85em'>h{h}</span>") for h in range(heads)]
            for layer in range(layers):
                cells.append(W.HTML(f"<span style='font-size:0.85em'>L{layer}</span>"))
                for head in range(heads):
                    site = f"fusion.{stream}.{layer}.{kind}"
                    button = W.Button(description="·", layout=W.Layout(width="3.8em", height="1.9em", padding="0",
                                                                        margin="0"))
                    button.add_class("vle-head-cell")
                    button.add_class(cell_class(site, head))
                    button.on_click(lambda _, key=(site, head): self.toggle(*key))
                    self.buttons[site, head] = button
                    cells.append(button)
            grid = W.GridBox(cells, layout=W.Layout(grid_template_columns=f"2em repeat({heads}, 3.8em)",
                                                    grid_gap="3px", align_items="center"))
            blocks.append(W.VBox([W.HTML(f"<b>{html.escape(title)}</b>"), grid],
                                 layout=W.Layout(margin="0 1.2em 0.6em 0")))
        super().__init__([W.HBox(blocks[i:i + 2]) for i in range(0, len(blocks), 2)])
        self._paint()

    def show_effects(self, effects: list[dict]) -> None:
        """Label and colour every cell with its sweep result ({"site", "head", "probability", "delta"})."""
        self.effects = {(e["site"], e["head"]): e for e in effects}
        self._paint()

    def toggle(self, site: str, head: int) -> None:
        self.chosen.symmetric_difference_update({(site, head)})
        self._paint()
        if self.on_toggle is not None:
            self.on_toggle()

    def clear(self) -> None:
        self.chosen.clear()
        self._paint()

    def ablated(self) -> dict[str, list[int]]:
        heads: dict[str, list[int]] = {}
        for site, head in sorted(self.chosen):
            heads.setdefault(site, []).append(head)
        return heads

    def _paint(self) -> None:
        keys = list(self.buttons)
        deltas = [self.effects[k]["delta"] if k in self.effects else 0.0 for k in keys]
        for key, delta, (background, text) in zip(keys, deltas, ablation_cell_colors(deltas)):
            button, off = self.buttons[key], key in self.chosen
            label = "·" if key not in self.effects else ("±0" if abs(delta) < 0.005 else f"{delta:+.2f}")
            button.description = f"{OFF}{label}" if off else label
            button.style.button_color = background
            button.style.text_color = text
            button.style.font_weight = "bold" if off else "normal"
            button.layout.border = "2px solid #111" if off else "1px solid #ccc"
            effect = self.effects.get(key)
            button.tooltip = (f"{key[0]} head {key[1]}" + (f": p {effect['probability']:.3f} ({delta:+.3f}) "
                                                          "ablated alone" if effect else "")
                              + (" · ablated now (click to restore)" if off else " · click to ablate"))
