"""``resolve_llm``: a backend from whatever names one: a backend (kept), a function (wrapped), an ``http(s)://`` URL
(chat completions), another string (a transformers model id or folder), or None (the environment).

>>> echo = resolve_llm(lambda prompt, **settings: "B")
>>> echo.generate("Answer with A or B.", max_tokens=4, temperature=0.0)
'B'
"""

from __future__ import annotations

import inspect
import os
import urllib.parse

from ..errors import InputError
from .backends import ChatCompletionsBackend, FunctionBackend
from .local import TransformersBackend


def resolve_llm(llm=None, **settings):
    """A backend from: an object with ``generate`` (kept), a function (wrapped), an ``http(s)://`` URL (chat
    completions), another string (a transformers model id or folder), or None (the environment; an error naming
    the options when nothing is set). ``settings`` go to the backend's constructor; settings a backend does not take
    (a timeout for a local model, say) are refused by name."""
    settings = {key: value for key, value in settings.items() if value is not None}
    if llm is None:
        return ChatCompletionsBackend(**_settings_for(ChatCompletionsBackend, settings, "a chat-completions server"))
    if hasattr(llm, "generate"):
        _no_settings(settings, "a ready backend")
        return llm
    if isinstance(llm, (str, os.PathLike)):
        text = os.fspath(llm).strip()
        if not text:
            raise InputError("the LLM is an empty string: give a server URL (http://host:port/v1) or a model id")
        scheme = urllib.parse.urlsplit(text).scheme if "://" in text else ""
        if scheme in ("http", "https"):
            return ChatCompletionsBackend(base_url=text, **_settings_for(ChatCompletionsBackend, settings,
                                                                         "a chat-completions server"))
        if scheme:
            raise InputError(f"the LLM URL {text!r} uses the scheme {scheme}://, which is not supported: an LLM "
                             "server is reached over http:// or https://")
        return TransformersBackend(text, **_settings_for(TransformersBackend, settings, "a local transformers model"))
    if callable(llm):
        _no_settings(settings, "a function")
        return FunctionBackend(llm)
    raise TypeError(f"an LLM is a backend, a URL, a model id or folder, or a function; got {type(llm).__name__}")


def _settings_for(backend_class, settings: dict, what: str) -> dict:
    accepted = [name for name in inspect.signature(backend_class.__init__).parameters if name not in ("self",)]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise InputError(f"{what} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}")
    return settings


def _no_settings(settings: dict, what: str) -> None:
    if settings:
        raise InputError(f"{what} was given as the LLM, so {', '.join(sorted(settings))} cannot apply: configure the "
                         "backend itself")
