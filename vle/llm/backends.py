"""LLM backends: anything with ``generate(prompt, max_tokens=..., temperature=...) -> str``.

* ``ChatCompletionsBackend``: an OpenAI-compatible ``/v1/chat/completions`` endpoint over HTTP, standard library
  only. llama.cpp's ``llama-server``, vLLM, Ollama, LM Studio and OpenAI itself speak it.
* ``vle.llm.local.TransformersBackend``: a transformers text-generation model by hub id or folder.
* ``resolve_llm``: a backend, a URL, a model id/folder, a plain function, or ``None`` for the environment.

Settings not given as arguments come from the environment: ``VLE_LLM_BASE_URL`` (or ``OPENAI_BASE_URL``),
``VLE_LLM_MODEL``, ``VLE_LLM_API_KEY`` (or ``OPENAI_API_KEY``).

>>> echo = resolve_llm(lambda prompt, **settings: "B")
>>> echo.generate("Answer with A or B.", max_tokens=4, temperature=0.0)
'B'
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = "VLE_LLM_BASE_URL", "VLE_LLM_MODEL", "VLE_LLM_API_KEY"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
NOT_CONFIGURED = (
    "no LLM backend is configured: set VLE_LLM_BASE_URL to an OpenAI-compatible server (for example "
    "http://127.0.0.1:8080/v1 for llama.cpp's llama-server, http://127.0.0.1:8000/v1 for vLLM, "
    "http://127.0.0.1:11434/v1 for Ollama), pass base_url= (--base-url on the command line), or pass "
    "llm=TransformersBackend('a text-generation model id or folder')")


class LLMError(RuntimeError):
    """The LLM could not be asked or its reply could not be read; the message says which and why."""


class LLMNotConfiguredError(LLMError, ValueError):
    """No backend was given and none is configured in the environment."""


class FunctionBackend:
    """Wraps ``fn(prompt, max_tokens=..., temperature=...) -> str``: for stubs and custom clients."""

    def __init__(self, fn: Callable[..., str], name: str | None = None):
        self.fn, self.name = fn, name or f"function {getattr(fn, '__name__', type(fn).__name__)}"

    def generate(self, prompt: str, max_tokens: int = 64, temperature: float = 0.0) -> str:
        return str(self.fn(prompt, max_tokens=max_tokens, temperature=temperature))


class ChatCompletionsBackend:
    """An OpenAI-compatible chat-completions server.

    ``base_url`` ends in ``/v1`` (a bare ``http://host:port`` gets ``/v1`` added). ``model`` may be left out: the
    first model the server lists at ``/v1/models`` is used (llama.cpp serves one). ``timeout`` is in seconds per
    connection attempt and per read. Connection failures, timeouts, 408/409/425/429 and 5xx answers are retried
    ``retries`` times, waiting ``backoff``, 2 x ``backoff``, 4 x ``backoff`` ... (capped at ``max_backoff``, or the
    server's Retry-After); other 4xx answers fail at once with the server's own message.
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, retries: int = 2, backoff: float = 0.5, max_backoff: float = 8.0,
                 system: str | None = None, extra_body: dict | None = None):
        base_url = base_url or os.environ.get(ENV_BASE_URL) or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise LLMNotConfiguredError(NOT_CONFIGURED)
        self.base_url = normalise_base_url(base_url)
        self.model = model or os.environ.get(ENV_MODEL) or None
        self.api_key = api_key or os.environ.get(ENV_API_KEY) or os.environ.get("OPENAI_API_KEY") or None
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(f"need timeout > 0, retries >= 0, backoff >= 0; got {timeout}, {retries}, {backoff}")
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.system, self.extra_body = system, dict(extra_body or {})

    @property
    def name(self) -> str:
        return f"chat completions at {self.base_url} (model {self.model or 'not chosen yet'})"

    def generate(self, prompt: str, max_tokens: int = 64, temperature: float = 0.0) -> str:
        messages = ([{"role": "system", "content": self.system}] if self.system else [])
        messages.append({"role": "user", "content": prompt})
        body = {"model": self.model or self.first_model(), "messages": messages, "max_tokens": int(max_tokens),
                "temperature": float(temperature), "stream": False, **self.extra_body}
        return message_text(self.request("chat/completions", body))

    def first_model(self) -> str:
        """The first model ``/v1/models`` lists (remembered): servers that host one model need no name."""
        listing = self.request("models")
        try:
            self.model = str(listing["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise LLMError(f"{self.base_url}/models lists no model; pass model= (--model) or set {ENV_MODEL}") from None
        return self.model

    def request(self, path: str, body: dict | None = None) -> dict:
        """GET (no body) or POST JSON to ``base_url/path`` with retries; the decoded JSON answer."""
        url = f"{self.base_url}/{path}"
        failures = []
        for attempt in range(self.retries + 1):
            try:
                return self._request_once(url, body)
            except _Retryable as error:
                failures.append(str(error))
                if attempt == self.retries:
                    break
                wait = min(self.backoff * 2 ** attempt, self.max_backoff)
                time.sleep(error.retry_after if error.retry_after is not None else wait)
        tries = f"{len(failures)} attempt{'s' if len(failures) > 1 else ''}"
        raise LLMError(f"{url} failed after {tries}: {'; '.join(failures)}")

    def _request_once(self, url: str, body: dict | None) -> dict:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = _error_detail(error)
            if error.code in RETRY_STATUS or error.code >= 500:
                raise _Retryable(f"HTTP {error.code} {detail}", _retry_after(error, self.max_backoff)) from None
            hint = " (check the API key)" if error.code in (401, 403) else ""
            hint = hint or (" (check the base URL and the model name)" if error.code == 404 else "")
            raise LLMError(f"{url} answered HTTP {error.code}{hint}: {detail}") from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(f"no answer within {self.timeout:g} s") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"no connection within {self.timeout:g} s") from None
            raise _Retryable(f"cannot connect ({error.reason})") from None
        except (OSError, http.client.HTTPException) as error:  # reset or closed mid-answer
            raise _Retryable(f"connection lost ({error})") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LLMError(f"{url} did not answer JSON: {raw[:200]!r}") from None


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def normalise_base_url(base_url: str) -> str:
    """'http://h:8080' → 'http://h:8080/v1'; a URL with a path is kept (no trailing slash)."""
    parsed = urllib.parse.urlsplit(base_url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"the LLM base URL must look like http://host:port/v1, got {base_url!r}")
    path = parsed.path.rstrip("/") or "/v1"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def message_text(answer: dict) -> str:
    """The text of the first choice of a chat-completions answer (string or list-of-parts content)."""
    try:
        choice = answer["choices"][0]
        content = choice["message"]["content"] if "message" in choice else choice["text"]
    except (KeyError, IndexError, TypeError):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise LLMError(f"the chat-completions answer has no choices[0].message.content: "
                       f"{error or json.dumps(answer)[:200]}") from None
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _error_detail(error: urllib.error.HTTPError) -> str:
    try:
        raw = error.read().decode("utf-8", "replace")
    except OSError:
        return error.reason or ""
    try:
        payload = json.loads(raw)
        message = payload.get("error", payload) if isinstance(payload, dict) else payload
        if isinstance(message, dict):
            message = message.get("message", message)
        return str(message)[:300]
    except json.JSONDecodeError:
        return raw.strip()[:300] or str(error.reason)


def _retry_after(error: urllib.error.HTTPError, cap: float) -> float | None:
    try:
        return min(float(error.headers.get("Retry-After", "")), cap)
    except (TypeError, ValueError):
        return None


def resolve_llm(llm=None, **settings):
    """A backend from: an object with ``generate`` (kept), a function (wrapped), an ``http(s)://`` URL (chat
    completions), another string (a transformers model id or folder), or None (the environment; an error naming
    the options when nothing is set). ``settings`` go to the backend's constructor."""
    if llm is None:
        return ChatCompletionsBackend(**settings)
    if hasattr(llm, "generate"):
        return llm
    if isinstance(llm, (str, os.PathLike)):
        text = os.fspath(llm)
        if text.startswith(("http://", "https://")):
            return ChatCompletionsBackend(base_url=text, **settings)
        from .local import TransformersBackend

        return TransformersBackend(text, **settings)
    if callable(llm):
        return FunctionBackend(llm)
    raise TypeError(f"an LLM is a backend, a URL, a model id or folder, or a function; got {type(llm).__name__}")
