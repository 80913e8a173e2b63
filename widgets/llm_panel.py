"""The VQA + LLM panel: caption, the VQA candidates with their scores, the exact prompt, the LLM's raw reply, the
short and long answers, and whether the LLM changed the VQA model's answer (``vle.llm``).

It asks the LLM only on its own button. Without a configured backend it shows how to configure one and lets the
user type a server URL.
"""

from __future__ import annotations

import hashlib
import html

import ipywidgets as W

from vle.llm import LLMNotConfiguredError, answer_with_llm, resolve_captioner, resolve_llm

from ._common import Status, html_table, score_bar


class LLMPanel(W.VBox):
    """``source()`` returns (image, question, answers) from the explorer; ``llm``/``captioner`` as in
    ``vle.llm.vqa_with_llm`` (None: the environment / the default captioner for ``vqa_model``)."""

    def __init__(self, source, llm=None, captioner=None, vqa_model: str | None = None):
        self.source, self.vqa_model = source, vqa_model
        self._captioner_spec, self._captioner = captioner, None
        self._captions: dict = {}  # image bytes digest → caption
        self.backend = None
        self.result = None

        self.url = W.Text(placeholder="http://127.0.0.1:8080/v1", description="server",
                          layout=W.Layout(width="26em"))
        self.connect_button = W.Button(description="Use this server")
        self.ask_button = W.Button(description="Ask the LLM", button_style="info", icon="comment")
        self.ask_button.add_class("vle-llm-ask")
        self.setup = W.HTML()
        self.status = Status()
        self.output = W.HTML()
        self.output.add_class("vle-llm-result")
        self.connect_button.on_click(lambda _: self.configure(self.url.value.strip() or None))
        self.ask_button.on_click(lambda _: self.ask())
        super().__init__([self.setup, W.HBox([self.url, self.connect_button]), self.ask_button, self.status,
                          self.output])
        self.configure(llm, quiet=True)

    def configure(self, llm=None, quiet: bool = False) -> bool:
        """Use ``llm`` (a URL, model id, backend or function; None: the environment). Returns whether a backend is
        set; when none is, the panel says how to configure one."""

        try:
            self.backend = resolve_llm(llm)
        except LLMNotConfiguredError as error:
            self.backend = None
            self.setup.value = _how_to_configure(str(error))
        except Exception as error:  # noqa: BLE001
            self.backend = None
            self.setup.value = f"<span style='color:#b00020'>{html.escape(f'{type(error).__name__}: {error}')}</span>"
        else:
            name = getattr(self.backend, "name", str(self.backend))
            self.setup.value = f"LLM backend: <code>{html.escape(name)}</code>"
            if not quiet:
                self.status.show("backend set", "ok")
        self.ask_button.disabled = self.backend is None
        return self.backend is not None

    def caption(self, image) -> str:
        key = hashlib.sha1(image.tobytes()).hexdigest()
        if key not in self._captions:
            if self._captioner is None:

                self._captioner = resolve_captioner(self._captioner_spec, self.vqa_model)
            self._captions[key] = str(self._captioner(image))
        return self._captions[key]

    def ask(self) -> None:
        with self.status.run(self.ask_button, steps=2, text="captioning …") as status:
            if self.backend is None:
                raise ValueError("no LLM backend: type a server URL above, or set VLE_LLM_BASE_URL and restart")
            image, question, answers = self.source()
            caption = self.caption(image)
            status.step("asking the LLM …")
            self.result = answer_with_llm(self.backend, question, caption, answers)
            self.output.value = format_result(self.result)


def _how_to_configure(message: str) -> str:
    return ("<div style='max-width:52em'><b>No LLM backend is configured.</b> The VQA + LLM answer needs one; the "
            "explanation above does not.<br>" + html.escape(message) + "<br>For example:<pre>"
            "llama-server -m model.gguf --port 8080            # llama.cpp\n"
            "export VLE_LLM_BASE_URL=http://127.0.0.1:8080/v1  # then restart the explorer\n"
            "VQAExplorer(llm=\"http://127.0.0.1:8080/v1\")       # or pass it in Python</pre>"
            "or type the server's URL below.</div>")


def format_result(result) -> str:
    """Every step of a ``VQALLMResult`` as HTML."""
    def pre(text) -> str:
        return ("<pre style='white-space:pre-wrap;max-width:60em;background:#f6f6f6;padding:4px'>"
                f"{html.escape(str(text))}</pre>")

    rows = []
    for index, candidate in enumerate(result.candidates):
        marks = (["VQA top"] if index == 0 else []) + (["LLM's pick"] if index == result.chosen else [])
        name = html.escape(candidate.answer)
        rows.append((candidate.letter, f"<b>{name}</b>" if index == result.chosen else name, f"{candidate.score:.3f}",
                     score_bar(candidate.score), ", ".join(marks)))
    if result.fell_back:
        verdict = f"kept the VQA top answer ({html.escape(result.source)})"
    elif result.changed:
        verdict = (f"<b style='color:#b35900'>the LLM changed the answer</b> from “{html.escape(result.vqa_answer)}” "
                   f"to “{html.escape(result.short_answer)}”")
    else:
        verdict = "the LLM agrees with the VQA top answer"
    parts = [f"<div>caption: <i>{html.escape(result.caption)}</i></div>",
             html_table(rows, ("", "candidate", "p", "", "")),
             f"<div style='font-size:1.2em'>short answer: <b class='vle-llm-short'>{html.escape(result.short_answer)}"
             f"</b> — {verdict}</div>",
             f"<div>long answer: {html.escape(result.long_answer or '—')}</div>",
             f"<details><summary>prompt and reply ({html.escape(result.backend)})</summary>prompt:{pre(result.prompt)}"
             f"reply:{pre(result.reply)}"]
    if result.long_prompt is not None:
        parts.append(f"long prompt:{pre(result.long_prompt)}long reply:{pre(result.long_reply)}")
    parts.append("</details>")
    if result.error:
        parts.append(f"<div style='color:#b00020'>error: {html.escape(result.error)}</div>")
    return "".join(parts)
