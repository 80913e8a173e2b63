"""``ClickableImage``: a picture that reports clicks and dragged boxes in the pixels of the image it shows.

The browser's mouse events reach Python through ipyevents (an ``Event`` widget watching the ``Image``; its
JupyterLab / Voilà extension ships prebuilt in the wheel). Each event carries ``relativeX`` / ``relativeY`` (CSS
pixels from the picture's top-left corner) and ``boundingRectWidth`` / ``boundingRectHeight`` (its size on screen):
their ratio is where in the image the pointer was, however the picture is scaled. A press and a release less than
``CLICK_SLOP`` image pixels apart are a click, farther apart a dragged box.
"""

from __future__ import annotations

import io

import ipywidgets as W
import numpy as np
from ipyevents import Event
from PIL import Image

CLICK_SLOP = 2.0  # image pixels: a press and release closer than this are a click


class ClickableImage(W.VBox):
    """``show(array, size)`` shows an (H, W, 3) picture of an image of ``size`` (width, height); ``on_click(x, y)``
    and ``on_box((x1, y1, x2, y2))`` receive image pixels (box corners sorted, x2 / y2 exclusive, within the
    image). ``handle(event)`` is what ipyevents calls, with its event dict (tests call it with their own)."""

    def __init__(self, css_class: str, width: str = "384px", on_click=None, on_box=None):
        self.image = W.Image(format="png", layout=W.Layout(width=width, height="auto", align_self="flex-start",
                                                           border="1px solid #bbb", cursor="crosshair"))
        self.image.add_class(css_class)
        self.size: tuple[int, int] | None = None
        self.on_click, self.on_box = on_click, on_box
        self._pressed = None
        # preventing the default of a press keeps the browser from dragging the picture away (no release would come)
        self.events = Event(source=self.image, watched_events=["mousedown", "mouseup"], prevent_default_action=True)
        self.events.on_dom_event(self.handle)
        super().__init__([self.image])

    def show(self, pixels: np.ndarray, size: tuple[int, int]) -> None:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="png")
        self.image.value, self.size = buffer.getvalue(), (int(size[0]), int(size[1]))

    def to_image(self, event: dict) -> tuple[float, float] | None:
        """(x, y) in image pixels of a mouse event, or None when it carries no position (or nothing is shown)."""
        width, height = event.get("boundingRectWidth"), event.get("boundingRectHeight")
        if self.size is None or not width or not height or "relativeX" not in event:
            return None
        x = float(event["relativeX"]) / float(width) * self.size[0]
        y = float(event["relativeY"]) / float(height) * self.size[1]
        return min(max(x, 0.0), self.size[0] - 1e-6), min(max(y, 0.0), self.size[1] - 1e-6)

    def handle(self, event: dict) -> None:
        point = self.to_image(event)
        if point is None:
            return
        if event.get("type") == "mousedown":
            self._pressed = point
            return
        if event.get("type") != "mouseup" or self._pressed is None:
            return
        (x0, y0), (x1, y1), self._pressed = self._pressed, point, None
        if max(abs(x1 - x0), abs(y1 - y0)) < CLICK_SLOP:
            if self.on_click is not None:
                self.on_click(x1, y1)
            return
        box = (int(min(x0, x1)), int(min(y0, y1)), int(np.ceil(max(x0, x1))), int(np.ceil(max(y0, y1))))
        if self.on_box is not None:
            self.on_box(box)


def click_event(x: float, y: float, size: tuple[int, int], shown: tuple[int, int], kind: str) -> dict:
    """The event dict ipyevents sends for a ``kind`` ("mousedown" / "mouseup") at image pixel (x, y) of an image of
    ``size`` shown ``shown`` CSS pixels large: for tests and scripts that drive a ``ClickableImage`` without a
    browser."""
    return {"type": kind, "relativeX": x / size[0] * shown[0], "relativeY": y / size[1] * shown[1],
            "boundingRectWidth": shown[0], "boundingRectHeight": shown[1]}
