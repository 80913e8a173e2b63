"""LLM backends: anything with ``generate(prompt, max_tokens=..., temperature=...) -> str``.

* ``ChatCompletionsBackend``: an OpenAI-compatible ``/v1/chat/completions`` endpoint over HTTP (httpx), with one
  deadline for the whole request. llama.cpp's ``llama-server``, vLLM, Ollama, LM Studio and OpenAI itself speak it.
* ``vle.llm.local.TransformersBackend``: a transformers text-generation model by hub id or folder.
* ``vle.llm.resolve.resolve_llm``: a backend from a URL, a model id/folder, a plain function, or ``None`` for the
  environment.

Settings not given as arguments come from the environment: ``VLE_LLM_BASE_URL`` (or ``OPENAI_BASE_URL``),
``VLE_LLM_MODEL``, ``VLE_LLM_API_KEY`` (or ``OPENAI_API_KEY``).

>>> echo = FunctionBackend(lambda prompt, **settings: "B")
>>> echo.generate("Answer with A or B.", max_tokens=4, temperature=0.0)
'B'
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Callable

import httpx

from ..errors import InputError

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
    first model the server lists at ``/v1/models`` is used (llama.cpp serves one). ``timeout`` (seconds) bounds each
    whole request, retries and their waits included: connecting, sending and every read share it, so a server that
    trickles its answer cannot stretch it. Connection failures, timeouts, 408/409/425/429 and 5xx answers are retried
    ``retries`` times while time is left, waiting ``backoff``, 2 x ``backoff``, 4 x ``backoff`` ... (capped at
    ``max_backoff``, or the server's Retry-After); other 4xx answers fail at once with the server's own message.
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, retries: int = 2, backoff: float = 0.5, max_backoff: float = 8.0,
                 system: str | None = None, extra_body: dict | None = None):
        base_url = base_url or os.environ.get(ENV_BASE_URL) or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise LLMNotConfiguredError(NOT_CONFIGURED)
        self.base_url = normalise_base_url(base_url)
        for name, value in (("model", model), ("api_key", api_key), ("system", system)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"{name} must be a string, got {type(value).__name__}")
        self.model = model or os.environ.get(ENV_MODEL) or None
        self.api_key = api_key or os.environ.get(ENV_API_KEY) or os.environ.get("OPENAI_API_KEY") or None
        self.timeout = _seconds(timeout, "timeout", positive=True)
        self.backoff, self.max_backoff = _seconds(backoff, "backoff"), _seconds(max_backoff, "max_backoff")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InputError(f"retries must be a whole number from 0, got {retries!r}")
        self.retries = retries
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
        """GET (no body) or POST JSON to ``base_url/path``, retried while the deadline allows; the decoded JSON."""
        url = f"{self.base_url}/{path}"
        deadline = time.monotonic() + self.timeout
        failures = []
        for attempt in range(self.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return self._request_once(url, body, remaining)
            except _Retryable as error:
                failures.append(str(error))
                wait = min(self.backoff * 2 ** attempt, self.max_backoff)
                wait = error.retry_after if error.retry_after is not None else wait
                if attempt == self.retries or time.monotonic() + wait >= deadline:
                    break
                time.sleep(wait)
        tries = f"{len(failures)} attempt{'s' if len(failures) != 1 else ''}"
        raise LLMError(f"{url} failed after {tries} within the {self.timeout:g} s timeout: "
                       f"{'; '.join(failures) or 'no time left'}")

    def _request_once(self, url: str, body: dict | None, seconds: float) -> dict:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"

        async def fetch() -> httpx.Response:
            async with httpx.AsyncClient(timeout=seconds) as client:
                if body is None:
                    return await client.get(url, headers=headers)
                return await client.post(url, headers=headers, json=body)

        try:
            response = _run_with_deadline(fetch, seconds)
        except (asyncio.TimeoutError, httpx.TimeoutException) as error:
            phase = "connection" if isinstance(error, httpx.ConnectTimeout) else "answer"
            raise _Retryable(f"no {phase} within {self.timeout:g} s") from None
        except httpx.ConnectError as error:
            raise _Retryable(f"cannot connect ({error})") from None
        except (httpx.TransportError, httpx.DecodingError) as error:  # reset or closed mid-answer
            raise _Retryable(f"connection lost ({error or type(error).__name__})") from None
        if response.status_code >= 400:
            detail = _error_detail(response)
            if response.status_code in RETRY_STATUS or response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code} {detail}", _retry_after(response, self.max_backoff))
            hint = " (check the API key)" if response.status_code in (401, 403) else ""
            hint = hint or (" (check the base URL and the model name)" if response.status_code == 404 else "")
            raise LLMError(f"{url} answered HTTP {response.status_code}{hint}: {detail}")
        try:
            return json.loads(response.content.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LLMError(f"{url} did not answer JSON: {response.content[:200]!r}") from None


def _run_with_deadline(fetch, seconds: float):
    """Run the coroutine ``fetch()`` to completion or cancel it after ``seconds``. It runs on an event loop of its
    own in a worker thread, so this works the same from a script and from a Jupyter kernel (which already runs a
    loop in the calling thread); cancelling closes the connection, so nothing outlives the deadline."""
    outcome = {}

    def work():
        try:
            outcome["value"] = asyncio.run(asyncio.wait_for(fetch(), seconds))
        except BaseException as error:  # noqa: BLE001  (handed to the caller's thread)
            outcome["error"] = error

    worker = threading.Thread(target=work, name="vle-llm-request", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _seconds(value, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        bound = "above 0" if positive else "from 0"
        raise InputError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def normalise_base_url(base_url: str) -> str:
    """'http://h:8080' → 'http://h:8080/v1'; a URL with a path is kept (no trailing slash)."""
    if not isinstance(base_url, str):
        raise InputError(f"the LLM base URL must be a string like http://host:port/v1, got {type(base_url).__name__}")
    parsed = urllib.parse.urlsplit(base_url.strip())
    if parsed.scheme and parsed.scheme not in ("http", "https") and parsed.netloc:
        raise InputError(f"the LLM base URL {base_url!r} uses the scheme {parsed.scheme}://, which is not supported: "
                         "an LLM server is reached over http:// or https://")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"the LLM base URL must look like http://host:port/v1, got {base_url!r}")
    try:
        parsed.port
    except ValueError:
        raise InputError(f"the LLM base URL {base_url!r} has an invalid port") from None
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


def _error_detail(response: httpx.Response) -> str:
    raw = response.content.decode("utf-8", "replace")
    try:
        payload = json.loads(raw)
        message = payload.get("error", payload) if isinstance(payload, dict) else payload
        if isinstance(message, dict):
            message = message.get("message", message)
        return str(message)[:300]
    except json.JSONDecodeError:
        return raw.strip()[:300] or response.reason_phrase


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    try:
        value = float(response.headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None
    return min(value, cap) if math.isfinite(value) and value >= 0 else None
