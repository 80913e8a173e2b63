"""VQA + LLM: prompts, reply parsing, the chat-completions backend against a real HTTP server on 127.0.0.1, the
transformers backend on a tiny GPT-2 built here, fallbacks, the pipeline and the command line."""

import dataclasses
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from vle import VLEConfig, VLEForITM
from vle.hub import shipped_models
from vle.llm import (
    DEFAULT_TEMPLATE, Candidate, ChatCompletionsBackend, LLMError, LLMNotConfiguredError, PromptTemplate,
    ShapesCaptioner, TransformersBackend, TransformersCaptioner, VQALLMResult, VQAWithLLM, answer_with_llm,
    read_choice, resolve_llm, vqa_with_llm,
)
from vle.llm import backends as backends_module
from vle.llm.tiny import save_tiny_causal_lm
from vle.shapes.tasks_other import parse_caption
from vle.testing import tiny_processor, tiny_vqa_pipeline

PICS = Path(__file__).resolve().parent.parent / "pics"
NOT_SHIPPED = pytest.mark.skipif(not {"vle-tiny-shapes", "vle-tiny-shapes-vqa"} <= set(shipped_models()),
                                 reason="the embedded shapes checkpoints are not shipped yet")
ENV_NAMES = ("VLE_LLM_BASE_URL", "VLE_LLM_MODEL", "VLE_LLM_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY")
VQA = [{"answer": "square", "score": 0.45}, {"answer": "circle", "score": 0.37},
       {"answer": "triangle", "score": 0.17}, {"answer": "red", "score": 0.01}]
QUESTION = "what shape is the blue object ?"


@pytest.fixture(autouse=True)
def _no_llm_environment(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------------------------
# A chat-completions server: answers like a careful LLM unless a test queues failures.

def rule_llm(prompt: str) -> str:
    """Chooses the first candidate the caption names (else A); the long prompt gets a sentence."""
    caption = re.search(r"picture: (.*?)\. Question:", prompt).group(1)
    candidates = re.findall(r"([A-Z]): (\S+) score: [\d.]+", prompt)
    letter, answer = next(((l, a) for l, a in candidates if a in caption.split()), candidates[0])
    if "Answer with" in prompt:
        return f"The answer is {letter}."
    return f"The picture shows {caption}, so the answer is {answer}."


class LLMServer:
    def __init__(self):
        self.requests, self.queue, self.models = [], [], ["tiny-test-llm"]
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                state.requests.append(("GET", self.path, dict(self.headers), None))
                if self.path == "/v1/models":
                    self.reply(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in state.models]})
                else:
                    self.reply(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                state.requests.append(("POST", self.path, dict(self.headers), body))
                if self.path != "/v1/chat/completions":
                    return self.reply(404, {"error": {"message": f"no route {self.path}"}})
                if state.queue:
                    status, payload, delay = state.queue.pop(0)
                    if delay:  # a test may patch time.sleep in the client
                        time.sleep(delay)
                    return self.reply(status, payload)
                content = rule_llm(body["messages"][-1]["content"])
                self.reply(200, {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})

            def reply(self, status, payload):
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def posts(self):
        return [r for r in self.requests if r[0] == "POST"]


@pytest.fixture
def server():
    llm_server = LLMServer()
    yield llm_server
    llm_server.httpd.shutdown()
    llm_server.httpd.server_close()


def fast(url, **settings):
    return ChatCompletionsBackend(url, **{"model": "tiny-test-llm", "retries": 1, "backoff": 0.0, **settings})


# ---------------------------------------------------------------------------------------------------------------
# Prompts and parsing

def test_default_prompt_has_the_demo_shape():
    candidates = tuple(Candidate(l, a["answer"], a["score"]) for l, a in zip("ABCD", VQA))
    prompt = DEFAULT_TEMPLATE.render_short("a large blue circle.", QUESTION, candidates)
    assert prompt.startswith(f"This is the caption of a picture: a large blue circle. Question: {QUESTION} "
                             "VQA model predicts: A: square score: 0.45 B: circle score: 0.37 C: triangle")
    assert "otherwise choose B, C or D based on the description. Answer with A or B or C or D." in prompt
    long = DEFAULT_TEMPLATE.render_long("a large blue circle", QUESTION, candidates, short_answer="circle")
    assert long.endswith("Tell me the right answer with a long sentence.")


def test_template_is_overridable_and_checked():
    template = PromptTemplate(long="{caption} | {question} | short: {short_answer}", candidate="{answer}={score:.1f}")
    result = answer_with_llm(lambda prompt, **s: "B", QUESTION, "a blue circle", VQA, template=template)
    assert "square=0.5 circle=0.4" in result.prompt
    assert result.long_prompt == f"a blue circle | {QUESTION} | short: circle"
    with pytest.raises(ValueError, match="placeholders it may use"):
        PromptTemplate(short="{caption} {colour}")


@pytest.mark.parametrize("reply, index, how", [
    ("B", 1, "letter"), (" c) ", 2, "letter"), ("(D) red", 3, "letter"), ("**A**: square", 0, "letter"),
    ("Answer: (c)", 2, "letter"), ("The answer is **B**.", 1, "letter"), ("I would choose option C.", 2, "letter"),
    ("<think>A's score is low; the caption says circle.</think>\nB", 1, "letter"),
    ("Since A's score is below 0.8, I pick D", 3, "letter"),
    ("circle", 1, "answer text"), ("It is a triangle.", 2, "answer text"), ("Triangle!", 2, "answer text"),
    ("Looking again... B seems right", 1, "letter"), ("A is the right one", 0, "letter"),
    ("", None, "unparseable"), (None, None, "unparseable"), ("E", None, "unparseable"),
    ("A or B", None, "unparseable"), ("A red square is shown.", None, "unparseable"),
    ("<think>it must be C, surely", None, "unparseable"), ("I don't know", None, "unparseable"),
])
def test_odd_replies(reply, index, how):
    assert dataclasses.astuple(read_choice(reply, [a["answer"] for a in VQA])) == (index, how)


def test_unparseable_reply_keeps_the_vqa_top_answer():
    result = answer_with_llm(lambda prompt, **s: "Hmm, hard to say.", QUESTION, "a blue circle", VQA)
    assert (result.short_answer, result.source, result.changed, result.fell_back) == ("square", "unparseable",
                                                                                        False, True)
    assert result.reply == "Hmm, hard to say." and result.error is None


def test_answers_that_are_numbers():
    counts = [{"answer": "3", "score": 0.5}, {"answer": "2", "score": 0.4}]
    assert read_choice("There are 2 triangles.", ["3", "2"]).index == 1
    assert answer_with_llm(lambda p, **s: "2", "how many triangles are there ?", "a", counts).chosen == 1


def test_result_validates_itself():
    candidates = (Candidate("A", "square", 0.6), Candidate("B", "circle", 0.4))
    good = dict(question="q", caption="c", candidates=candidates, prompt="p", reply="B", chosen=1, source="letter",
                short_answer="circle")
    result = VQALLMResult(**good)
    assert result.changed and result.vqa_answer == "square"
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.chosen = 0
    with pytest.raises(ValueError, match="is not candidate 1"):
        VQALLMResult(**{**good, "short_answer": "square"})
    with pytest.raises(ValueError, match="fallback keeps the VQA top answer"):
        VQALLMResult(**{**good, "source": "unparseable"})


# ---------------------------------------------------------------------------------------------------------------
# The chat-completions backend against a real local server

def test_http_backend_sends_a_chat_completion(server, monkeypatch):
    monkeypatch.setenv("VLE_LLM_BASE_URL", server.url.removesuffix("/v1"))  # /v1 is added
    monkeypatch.setenv("VLE_LLM_MODEL", "tiny-test-llm")
    monkeypatch.setenv("VLE_LLM_API_KEY", "secret-1")
    backend = resolve_llm(None)
    assert backend.base_url == server.url
    prompt = DEFAULT_TEMPLATE.render_short("a blue circle", QUESTION, tuple(
        Candidate(l, a["answer"], a["score"]) for l, a in zip("ABCD", VQA)))
    assert backend.generate(prompt, max_tokens=7, temperature=0.0) == "The answer is B."
    method, path, headers, body = server.requests[-1]
    assert (method, path, headers["Authorization"]) == ("POST", "/v1/chat/completions", "Bearer secret-1")
    assert body["model"] == "tiny-test-llm" and body["max_tokens"] == 7 and body["temperature"] == 0.0
    assert body["messages"] == [{"role": "user", "content": prompt}]


def test_openai_names_and_model_discovery(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "secret-2")
    backend = ChatCompletionsBackend()  # no model: the server's first listed model
    result = answer_with_llm(backend, QUESTION, "a large blue circle", VQA)
    assert [r[:2] for r in server.requests] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                                ("POST", "/v1/chat/completions")]
    first = server.posts()[0]
    assert first[3]["model"] == "tiny-test-llm" and first[2]["Authorization"] == "Bearer secret-2"
    assert (result.short_answer, result.source, result.changed) == ("circle", "letter", True)
    assert result.long_answer == "The picture shows a large blue circle, so the answer is circle."
    assert result.prompt == server.posts()[0][3]["messages"][-1]["content"]


def test_server_errors_are_retried_with_exponential_backoff(server, monkeypatch):
    waits = []
    monkeypatch.setattr(backends_module.time, "sleep", waits.append)
    server.queue += [(500, {"error": {"message": "loading model"}}, 0), (503, b"busy", 0)]
    backend = fast(server.url, retries=2, backoff=0.25)
    assert backend.generate("Answer with A or B. picture: a. Question: A: x score: 1") == "The answer is A."
    assert len(server.posts()) == 3 and waits == [0.25, 0.5]


def test_persistent_server_errors_fall_back_cleanly(server):
    server.queue += [(500, {"error": {"message": "CUDA out of memory"}}, 0)] * 2
    result = answer_with_llm(fast(server.url), QUESTION, "a blue circle", VQA)
    assert (result.short_answer, result.source, result.reply, result.long_answer) == ("square", "llm error", None,
                                                                                       None)
    assert "after 2 attempts" in result.error and "HTTP 500 CUDA out of memory" in result.error
    assert len(server.posts()) == 2  # the long answer is not asked after a failure


def test_timeouts_fall_back_cleanly(server):
    server.queue += [(200, {"choices": [{"message": {"content": "B"}}]}, 0.6)]
    start = time.perf_counter()
    result = answer_with_llm(fast(server.url, timeout=0.15, retries=0), QUESTION, "a blue circle", VQA)
    assert time.perf_counter() - start < 0.5
    assert result.source == "llm error" and result.short_answer == "square"
    assert "no answer within 0.15 s" in result.error


def test_long_answer_failure_keeps_the_short_answer(server):
    server.queue += [(200, {"choices": [{"message": {"content": "B"}}]}, 0), (502, b"bad gateway", 0),
                     (502, b"bad gateway", 0)]
    result = answer_with_llm(fast(server.url), QUESTION, "a blue circle", VQA)
    assert (result.short_answer, result.source, result.long_answer) == ("circle", "letter", None)
    assert result.error.startswith("long answer:") and "HTTP 502 bad gateway" in result.error


def test_client_errors_are_not_retried(server):
    server.queue += [(401, {"error": {"message": "invalid api key"}}, 0)]
    with pytest.raises(LLMError, match=r"HTTP 401 \(check the API key\): invalid api key"):
        fast(server.url, retries=3).generate("hello")
    assert len(server.posts()) == 1


def test_replies_that_are_not_chat_completions(server):
    server.queue += [(200, b"<html>proxy login</html>", 0), (200, {"error": "model not loaded"}, 0),
                     (200, {"choices": [{"message": {"content": [{"type": "text", "text": "C"}]}}]}, 0)]
    with pytest.raises(LLMError, match="did not answer JSON"):
        fast(server.url).generate("hi")
    with pytest.raises(LLMError, match="model not loaded"):
        fast(server.url).generate("hi")
    assert fast(server.url).generate("hi") == "C"  # content given as parts


def test_no_server_listening():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = answer_with_llm(fast(f"http://127.0.0.1:{port}/v1"), QUESTION, "a", VQA)
    assert result.fell_back and "cannot connect" in result.error


def test_no_backend_configured_is_a_clear_error():
    with pytest.raises(LLMNotConfiguredError, match="VLE_LLM_BASE_URL.*llama-server.*Ollama"):
        resolve_llm(None)
    with pytest.raises(LLMNotConfiguredError):
        vqa_with_llm("no-such-model")  # before any model is loaded
    with pytest.raises(ValueError, match="must look like http://host:port/v1"):
        ChatCompletionsBackend("localhost:8080")


# ---------------------------------------------------------------------------------------------------------------
# The transformers backend on a tiny GPT-2 built here

@pytest.fixture(scope="module")
def tiny_lm_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-lm")
    return save_tiny_causal_lm(str(root / "says-c"), always="C"), save_tiny_causal_lm(str(root / "random"))


def test_transformers_backend_answers_through_the_pipeline(tiny_lm_folders):
    rigged, random = tiny_lm_folders
    result = answer_with_llm(rigged, QUESTION, "a blue circle", VQA)  # a folder → TransformersBackend
    assert (result.short_answer, result.source, result.changed) == ("triangle", "letter", True)
    assert result.long_answer.startswith("C C") and result.backend.startswith("transformers model")
    backend = TransformersBackend(random)
    assert backend.generate("Answer with A or B .", max_tokens=5) == backend.generate("Answer with A or B .",
                                                                                      max_tokens=5)
    chosen = answer_with_llm(backend, QUESTION, "a blue circle", VQA, long_max_tokens=8)
    assert chosen.source in ("letter", "answer text", "unparseable")
    with pytest.raises(LLMError, match="reads at most 512"):
        backend.generate("circle " * 600, max_tokens=4)


# ---------------------------------------------------------------------------------------------------------------
# Captioners and the pipeline

def test_shapes_captioner_picks_a_grammar_caption():
    captioner = ShapesCaptioner(VLEForITM(VLEConfig.tiny()).eval(), tiny_processor(), beam=3, n_captions=2)
    image = np.zeros((32, 32, 3), np.uint8)
    ranked = captioner.rank(image)
    assert len(ranked) == 54 + 3 * 2 * 4 and [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    caption = captioner(image)
    assert caption.split(". ")[0] == ranked[0][0]
    for part in caption.split(". "):
        parse_caption(part)


def test_transformers_captioner_uses_the_transformers_pipeline(monkeypatch):
    import transformers

    calls = []

    def fake_pipeline(task, model, device=None):
        calls.append((task, model))
        return lambda *args, **kwargs: [{"generated_text": " a dog on a sofa "}]

    monkeypatch.setattr(transformers, "pipeline", fake_pipeline)
    captioner = TransformersCaptioner("some/captioner")
    assert captioner(np.zeros((8, 8, 3), np.uint8)) == "a dog on a sofa"
    assert calls[0][0] in ("image-to-text", "image-text-to-text") and calls[0][1] == "some/captioner"


def test_pipeline_on_tiny_models_against_the_server(server):
    vqa = tiny_vqa_pipeline(answers=("red", "blue", "circle"))
    captions = []
    pipe = VQAWithLLM(vqa.model, vqa.processor, captioner=lambda image: captions.append(image.size) or "a blue square",
                      llm=fast(server.url))
    image = np.zeros((32, 40, 3), np.uint8)
    result = pipe(image=image, question="what color is the circle ?", top_k=3)
    assert captions == [(40, 32)] and result.caption == "a blue square"
    assert [c.answer for c in result.candidates] == [a["answer"] for a in vqa(image=image, question="what color is "
                                                                                "the circle ?", top_k=3)]
    assert result.short_answer == "blue" and result.prompt == server.posts()[0][3]["messages"][-1]["content"]
    assert json.loads(json.dumps(result.to_dict()))["short_answer"] == "blue"
    given = pipe(image=image, question="what color is the circle ?", caption="a red square", top_k=2)
    assert captions == [(40, 32)] and given.caption == "a red square" and len(given.candidates) == 2
    batch = pipe([{"image": image, "question": "is there a circle ?"}] * 2, caption="a circle")
    assert len(batch) == 2 and all(isinstance(r, VQALLMResult) for r in batch)


@NOT_SHIPPED
def test_shapes_scene_end_to_end_with_the_shipped_models(server, capsys):
    from vle.cli import main

    record = json.loads((PICS / "shapes_0.json").read_text())
    question = record["questions"][0]["question"]
    pipe = vqa_with_llm(llm=server.url, llm_settings={"model": "tiny-test-llm"})
    assert isinstance(pipe.captioner, ShapesCaptioner)
    result = pipe(image=str(PICS / "shapes_0.png"), question=question)
    parse_caption(result.caption)  # a caption of the world's grammar
    assert len(result.candidates) == 4 and result.source in ("letter", "answer text")
    assert [c.score for c in result.candidates] == sorted((c.score for c in result.candidates), reverse=True)
    assert result.prompt == server.posts()[0][3]["messages"][-1]["content"] and result.long_answer

    assert main(["vqa-llm", str(PICS / "shapes_0.png"), question, "--base-url", server.url, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["caption"] == result.caption and printed["prompt"] == result.prompt


def test_cli_without_a_backend_says_how_to_configure_one(capsys):
    from vle.cli import main

    assert main(["vqa-llm", str(PICS / "shapes_0.png"), "what shape is the red object ?"]) == 2
    assert "VLE_LLM_BASE_URL" in capsys.readouterr().err
