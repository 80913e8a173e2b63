"""``vle-workbench``: the pipelines from the command line.

    vle-workbench vqa IMAGE "QUESTION" [--model M] [--top-k K]
    vle-workbench itm IMAGE "TEXT" [--model M]
    vle-workbench pbc IMAGE "PHRASE" [--model M] [--out overlay.png]
    vle-workbench vcr ANNOTATION.json --image IMAGE --metadata META.json [--task q2a|qa2r] [--model M]
    vle-workbench classify IMAGE LABEL [LABEL ...] [--template "a photo of a {}."] [--model M]
    vle-workbench vqa-llm IMAGE "QUESTION" [--base-url URL] [--model LLM] [--local MODEL] [--json]
    vle-workbench explain IMAGE "QUESTION" [--method M] [--answer A] [--rather-than B] [--out report.html]
    vle-workbench ablate IMAGE "QUESTION" [--answer A] [--sites cross|self|all] [--mode zero|mean] [--json]
    vle-workbench demo     (the main job: a VQA run with the embedded model on a scene from pics/)
    vle-workbench train --out DIR [--recipe full|teaching]
    vle-workbench evaluate [--seed S] [--n N] [--json]
    vle-workbench faithfulness [--seeds S1,S2 | --seed S] [--n N] [--methods M1,M2] [--vcr N] [--by-family] [--json]
                        (explanation methods: faithfulness and localisation, with 95% intervals)
    vle-workbench counterfactual [--seed S] [--n N] [--methods M1,M2] [--json]
                        (each object removed in turn: answer changes, and how well methods rank the removals)
    vle-workbench batch --data shapes|vqa2|vcr|jsonl|hf ... --out RUN [--methods M1,M2] [--batch-size B]
                        (a model over a dataset, stored for the dataset explorer; runs under torchrun unchanged)

Models are shipped names (offline), local folders or hub ids. Each command imports the model code (torch) when it
runs, so ``--help`` and mistyped options answer at once.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import traceback

import numpy as np

from .errors import InputError, dumps, read_json, write_atomically
from .hub import shipped_models
from .image_utils import load_image

DEFAULT_MODELS = {
    "vqa": "vle-tiny-shapes-vqa", "itm": "vle-tiny-shapes", "pbc": "vle-tiny-shapes", "classify": "vle-tiny-shapes",
    "vcr_q2a": "vle-tiny-shapes-vcr-q2a", "vcr_qa2r": "vle-tiny-shapes-vcr-qa2r",
}
DTYPE_CHOICES = ("auto", "float32", "bfloat16")  # vle.precision.DTYPES, without importing torch to parse options
VCR_TASKS = ("q2a", "qa2r")  # vle.vcr.TASKS, without importing torch to parse the command line
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _pipe(task: str, args):
    from .pipelines import pipeline  # heavy (torch): loaded when the command runs

    pipe = pipeline(task, args.model or DEFAULT_MODELS[task], dtype=args.dtype)
    args.settings = {"model": args.model or DEFAULT_MODELS[task], "dtype": pipe.dtype_choice}
    return pipe


def _print(value, args=None) -> None:
    """The command's result as JSON; with ``--json``, one object that also says how it was computed (the model and
    its float type)."""
    if args is not None and getattr(args, "json", False):
        value = {"result": value, **getattr(args, "settings", {})}
    print(dumps(value))


# -- option types: a bad value is an argparse error (status 2) that names the option -----------------------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def whole_number_from(low: int):
    """An option type for a whole number of at least ``low``."""
    def check(text: str) -> int:
        value = whole_number(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return check


def seed_list(text: str) -> list[int]:
    """Comma-separated whole numbers, e.g. ``1000003,2000000``."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds such as 1000003,2000000, got {text!r}")
    return [whole_number(part) for part in parts]


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, got {text}")
    return value


def output_path(suffixes: tuple[str, ...]):
    """An option type for a file to write: its folder must exist and its suffix be one of ``suffixes``."""
    def check(text: str) -> str:
        folder = os.path.dirname(os.path.abspath(text))
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name, e.g. {text.rstrip('/')}/out"
                                             f"{suffixes[0]}")
        if not os.path.isdir(folder):
            raise argparse.ArgumentTypeError(f"the folder {folder} does not exist: create it first")
        if not text.lower().endswith(suffixes):
            raise argparse.ArgumentTypeError(f"{text} must end in {' or '.join(suffixes)}")
        return text
    return check


# -- commands --------------------------------------------------------------------------------------------------

def cmd_vqa(args) -> None:
    _print(_pipe("vqa", args)(image=args.image, question=args.question, top_k=args.top_k), args)


def cmd_itm(args) -> None:
    _print(_pipe("itm", args)(image=args.image, text=args.text), args)


def cmd_pbc(args) -> None:
    result = _pipe("pbc", args)(image=args.image, text=args.text)
    encoded = io.BytesIO()
    result["image"].save(encoded, format=_pil_format(args.out))
    write_atomically(args.out, encoded.getvalue())
    _print({"scores": result["scores"].round(4).tolist(), "overlay": args.out}, args)


def _pil_format(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}.get(suffix, suffix.upper())


def cmd_vcr(args) -> None:
    from .vcr import check_annotation, check_metadata  # heavy (torch): loaded when the command runs

    annotation = read_json(args.annotation, "VCR annotation")
    metadata = read_json(args.metadata, "VCR metadata")
    image = load_image(args.image)
    check_annotation(annotation, args.task, source=args.annotation)
    check_metadata(metadata, image.width, image.height, len(annotation["objects"]), source=args.metadata)
    _print(_pipe(f"vcr_{args.task}", args)(image=image, annotation=annotation, metadata=metadata), args)


def cmd_classify(args) -> None:
    _print(_pipe("classify", args)(image=args.image, candidate_labels=args.labels,
                                         hypothesis_template=args.template), args)


def cmd_vqa_llm(args) -> None:
    from .llm import vqa_with_llm  # heavy (torch): loaded when the command runs

    if args.local:
        given = [flag for flag, value in (("--base-url", args.base_url), ("--model", args.model),
                                          ("--timeout", args.timeout)) if value is not None]
        if given:
            raise InputError(f"--local runs a model in this process: {', '.join(given)} only apply to a server; "
                             "give one or the other")
        llm, settings = args.local, {}
    else:  # a chat-completions server; unset values come from VLE_LLM_BASE_URL / VLE_LLM_MODEL / ...
        llm = args.base_url
        settings = {"model": args.model, "timeout": 60.0 if args.timeout is None else args.timeout}
    pipe = vqa_with_llm(args.vqa_model, captioner=args.captioner, llm=llm, llm_settings=settings, dtype=args.dtype)
    result = pipe(image=args.image, question=args.question, top_k=args.top_k)
    print(dumps(result.to_dict()) if args.json else result.format())


def cmd_demo(args) -> None:
    if DEFAULT_MODELS["vqa"] in shipped_models():
        from .demo import run_shapes_demo  # heavy (torch): loaded when the command runs

        run_shapes_demo()
        return
    from .testing import tiny_vqa_pipeline  # heavy (torch): loaded when the command runs

    print("The embedded shapes model is not shipped yet: running the VQA pipeline on a TINY RANDOM model, so the "
          "answers below mean nothing; they show the pipeline end to end.")
    image = np.full((64, 64, 3), 200, np.uint8)
    image[16:48, 16:48] = (220, 30, 30)
    question = "what color is the square?"
    print(f"question: {question}")
    for answer in tiny_vqa_pipeline(answers=("red", "blue", "green"))(image=image, question=question, top_k=3):
        print(f"  {answer['answer']:>8s}  {answer['score']:.3f}")
    print("truth: red")


def cmd_explain(args) -> None:
    """A VQA explanation as a self-contained HTML report (the same view as the workbench's VQA explorer). The session
    runs the image tower once: the answers and the explanation share its features."""
    import viz  # rendering stays outside vle: imported only by this command

    from .explain import Session, get_method  # heavy (torch): loaded when the command runs

    get_method(args.method)  # an unknown method fails before any model is loaded
    session = Session.from_pretrained(args.model or DEFAULT_MODELS["vqa"], head="vqa", dtype=args.dtype)
    if args.rather_than and not args.answer:
        raise InputError("--rather-than needs --answer: explain why --answer rather than --rather-than")
    image = load_image(args.image)
    inputs, answers = session.ask(image, args.question, args.top_k)
    if args.rather_than:
        explanation = session.contrast(inputs, args.answer, args.rather_than, method=args.method)
    else:
        explanation = session.explain(inputs, answer=args.answer or answers[0]["index"], method=args.method)
    page = viz.explanation_report_html(explanation, image, title=f"{args.question} → {answers[0]['answer']}: "
                                       f"{explanation.method} explanation of {explanation.target.label}")
    write_atomically(args.out, page.encode("utf-8"))
    _print({"answers": [{"score": a["score"], "answer": a["answer"]} for a in answers],
            "target": explanation.target.label, "method": explanation.method, "report": args.out,
            "dtype": session.dtype_choice})


def cmd_ablate(args) -> None:
    """Each attention head of the fusion ablated in turn: how the answer's probability changes."""
    from .explain import Session, vqa_answer
    from .explain.interventions import attention_sites, shapes_reference_means
    from .explain.sweep import ablation_sweep
    from .pipelines import to_model

    session = Session.from_pretrained(args.model or DEFAULT_MODELS["vqa"], head="vqa", dtype=args.dtype)
    model, processor = session.model, session.processor
    followed = vqa_answer(model, args.answer).index if args.answer else None  # None: the top answer
    inputs = to_model(model, dict(processor(text=args.question, images=load_image(args.image))))
    sites = attention_sites(model, args.sites)
    means = shapes_reference_means(model, processor, sites) if args.mode == "mean" else None
    result = ablation_sweep(model, inputs, followed, sites, args.mode, means, progress=not args.json)
    answer = vqa_answer(model, result.pop("index"))
    args.settings = {"model": args.model or DEFAULT_MODELS["vqa"], "dtype": session.dtype_choice}
    if args.json:
        _print({"answer": answer.answer, **result}, args)
        return
    print(f"{answer.answer}: {result['probability']:.4f} with every head; with one head ablated ({args.mode}):")
    for effect in sorted(result["effects"], key=lambda e: e["delta"])[:args.top]:
        print(f"  {effect['site']:<32} head {effect['head']:>2}  {effect['probability']:.4f}  "
              f"({effect['delta']:+.4f})")


def cmd_train(args) -> None:
    from .shapes.train import default_processes, train  # heavy (torch): loaded when the command runs

    processes = default_processes(args.recipe, limit=args.threads or 8) if args.processes is None else args.processes
    timings = train(args.out, recipe=args.recipe, seed=args.seed, threads=args.threads, processes=processes)
    _print({stage: round(seconds, 1) for stage, seconds in timings.items()})


def cmd_evaluate(args) -> None:
    from .shapes.evaluate import DEFAULT_SEED, evaluate, format_table  # heavy: torch
    from .shapes.train import run_models  # heavy (torch): loaded when the command runs

    models = run_models(args.models) if args.models else None
    results = evaluate(seed=DEFAULT_SEED if args.seed is None else args.seed, n=args.n, models=models,
                       progress=not args.json, dtype=args.dtype)
    print(dumps(results) if args.json else format_table(results))


def cmd_faithfulness(args) -> None:
    from .shapes.faithfulness import DEFAULT_MODEL, DEFAULT_QUESTIONS, DEFAULT_VCR_MODEL, faithfulness, format_table

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None else None
    results = faithfulness(seed=args.seed, seeds=args.seeds, n=DEFAULT_QUESTIONS if args.n is None else args.n,
                           methods=methods, model=args.model or DEFAULT_MODEL, progress=not args.json,
                           dtype=args.dtype, vcr=args.vcr, vcr_model=args.vcr_model or DEFAULT_VCR_MODEL)
    print(dumps(results) if args.json else format_table(results, by_family=args.by_family))


def cmd_counterfactual(args) -> None:
    """The object-removal study: each object of held-out scenes removed in turn, the question asked again."""
    from .explain import Session  # heavy (torch): loaded when the command runs
    from .shapes.faithfulness import DEFAULT_MODEL
    from .shapes.removal import check_study, format_table, removal_rows, summarise

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None else None
    seed, n, methods = check_study(args.seed, args.n, methods)  # before the model loads
    name = args.model or DEFAULT_MODEL
    session = Session.from_pretrained(name, head="vqa", dtype=args.dtype)
    rows = removal_rows(seed, n, methods, session.model, session.processor, progress=not args.json)
    result = summarise(rows, seed, name)
    args.settings = {"model": name, "dtype": session.dtype_choice}
    if args.json:
        _print(result, args)
    else:
        print(format_table(result))


def cmd_batch(args) -> None:
    from .batch import run_batch  # heavy: torch, DuckDB

    source = _data_source(args)
    source = source.first(args.limit) if args.limit else source
    kind = source.kind if source.kind == "vqa" else f"vcr_{source.task}"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods != "none" else []
    model = args.model or DEFAULT_MODELS[kind]
    summary = run_batch(source, model, args.out, methods=methods, batch_size=args.batch_size, dtype=args.dtype,
                        progress=not args.json)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one report
        if args.json:
            args.settings = {"model": model, "dtype": summary.pop("dtype")}
            _print(summary, args)
        else:
            why = "".join(f", {count} {reason}" for reason, count in summary["reasons"].items())
            print(f"{summary['stored']} examples stored in {args.out} ({summary['new']} new, {summary['skipped']} "
                  f"skipped{why}) in {summary['seconds']:.1f} s with {summary['processes']} process(es)")


def _data_source(args):
    from . import data

    needed = {"shapes": (), "vqa2": ("questions", "images"), "vcr": ("annotations", "images"), "jsonl": ("file",),
              "csv": ("file",), "hf": ("dataset",)}[args.data]
    missing = [f"--{name}" for name in needed if getattr(args, name) is None]
    if missing:
        raise InputError(f"--data {args.data} needs {' and '.join(missing)}")
    if args.data == "shapes":
        from .shapes.evaluate import DEFAULT_SEED

        return data.shapes_source(DEFAULT_SEED if args.seed is None else args.seed, args.n,
                                  "vcr" if args.task else "vqa", task=args.task or "q2a")
    if args.data == "vqa2":
        return data.vqa2_source(args.questions, args.annotations, args.images)
    if args.data == "vcr":
        return data.vcr_source(args.annotations, args.images, args.task or "q2a")
    if args.data in ("jsonl", "csv"):
        return data.table_source(args.file, args.images)
    return data.hf_source(args.dataset, args.image_column, args.question_column, args.answer_column, args.split)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is two lines (what is wrong, where the help is), not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\nsee '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vle-workbench", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name, handler, help_text, model: bool = True):
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(handler=handler)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the Python traceback of an internal error")
        if model:
            command.add_argument("--model", default=None, help="shipped name, folder or hub id")
        if model or name in ("vqa-llm", "evaluate"):
            command.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                                 help="the weights' float type; auto: bfloat16 for a wide model on hardware that "
                                      "multiplies it natively, else float32")
        if name in ("vqa", "itm", "pbc", "vcr", "classify"):
            command.add_argument("--json", action="store_true",
                                 help='one JSON object: {"result", "model", "dtype"}')
        return command

    vqa = add("vqa", cmd_vqa, "answer a question about an image")
    vqa.add_argument("image")
    vqa.add_argument("question")
    vqa.add_argument("--top-k", type=positive_int, default=5)
    itm = add("itm", cmd_itm, "probability that a text matches an image")
    itm.add_argument("image")
    itm.add_argument("text")
    pbc = add("pbc", cmd_pbc, "patches that a phrase is about, as an overlay")
    pbc.add_argument("image")
    pbc.add_argument("text")
    pbc.add_argument("--out", type=output_path(IMAGE_SUFFIXES), default="pbc_overlay.png")
    vcr = add("vcr", cmd_vcr, "VCR multiple choice from an annotation in the VCR format")
    vcr.add_argument("annotation")
    vcr.add_argument("--image", required=True)
    vcr.add_argument("--metadata", required=True)
    vcr.add_argument("--task", choices=VCR_TASKS, default=VCR_TASKS[0])
    classify = add("classify", cmd_classify, "zero-shot classification by image-text matching")
    classify.add_argument("image")
    classify.add_argument("labels", nargs="+")
    classify.add_argument("--template", default="a photo of a {}.")
    vqa_llm = add("vqa-llm", cmd_vqa_llm, "VQA candidates + a caption → an LLM's short and long answer", model=False)
    vqa_llm.add_argument("image")
    vqa_llm.add_argument("question")
    vqa_llm.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 "
                                            "(default: $VLE_LLM_BASE_URL)")
    vqa_llm.add_argument("--model", help="the LLM's name there (default: $VLE_LLM_MODEL, else the server's first)")
    vqa_llm.add_argument("--local", help="a transformers text-generation model id or folder instead of a server")
    vqa_llm.add_argument("--vqa-model", default=DEFAULT_MODELS["vqa"], help="shipped name, folder or hub id")
    vqa_llm.add_argument("--captioner", help='"shapes" (ITM over the shapes grammar) or a captioning model id')
    vqa_llm.add_argument("--top-k", type=positive_int, default=4)
    vqa_llm.add_argument("--timeout", type=positive_seconds, default=None,
                         help="seconds for each whole LLM request, retries included (default 60)")
    vqa_llm.add_argument("--json", action="store_true", help="print the whole result as JSON")
    explain_cmd = add("explain", cmd_explain, "explain a VQA answer and write a self-contained HTML report")
    explain_cmd.add_argument("image")
    explain_cmd.add_argument("question")
    explain_cmd.add_argument("--method", default="coattention_relevance",
                             help="a registered method (vle.explain.METHODS), e.g. rollout, occlusion, gradcam")
    explain_cmd.add_argument("--answer", default=None, help="the answer to explain (default: the top answer)")
    explain_cmd.add_argument("--rather-than", default=None, help="a second answer: explain why --answer rather "
                                                                 "than this one")
    explain_cmd.add_argument("--top-k", type=positive_int, default=5)
    explain_cmd.add_argument("--out", type=output_path((".html", ".htm")), default="report.html")
    ablate_cmd = add("ablate", cmd_ablate, "each fusion attention head ablated in turn: the answer's probability")
    ablate_cmd.add_argument("image")
    ablate_cmd.add_argument("question")
    ablate_cmd.add_argument("--answer", default=None, help="the answer to follow (default: the top answer)")
    ablate_cmd.add_argument("--sites", choices=("cross", "self", "all"), default="all")
    ablate_cmd.add_argument("--mode", choices=("zero", "mean"), default="zero",
                            help="zero, or each head's mean output over questions about held-out shapes scenes")
    ablate_cmd.add_argument("--top", type=positive_int, default=10, help="how many heads to list (not with --json)")
    ablate_cmd.add_argument("--json", action="store_true", help="every head, as one JSON object")
    add("demo", cmd_demo, "the main job: VQA with the embedded model on a scene from pics/", model=False)
    train = add("train", cmd_train, "train the shapes-world models (tokenizer, pretraining, VQA, VCR)", model=False)
    train.add_argument("--out", required=True, help="folder for the stage checkpoints (resumes if present)")
    train.add_argument("--recipe", choices=("full", "teaching", "smoke"), default="full")
    train.add_argument("--seed", type=whole_number, default=0)
    train.add_argument("--threads", type=positive_int, default=None, help="CPU threads in all (default: torch's)")
    train.add_argument("--processes", type=positive_int, default=None,
                       help="data-parallel processes, each on its share of every batch (default: one per core, up "
                            "to 8, as many as the batches split into)")
    evaluate = add("evaluate", cmd_evaluate, "accuracy of the shapes models on held-out scenes", model=False)
    evaluate.add_argument("--seed", type=whole_number, default=None, help="first held-out scene seed (>= 1000000)")
    evaluate.add_argument("--n", type=positive_int, default=200, help="number of held-out scenes")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--models", default=None, help="a training output folder instead of the shipped models")
    faithful = add("faithfulness", cmd_faithfulness, "faithfulness and localisation of every explanation method")
    seeds = faithful.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=seed_list, default=None,
                       help="comma-separated first scene seeds (>= 1000000), pooled: each takes --n scenes")
    seeds.add_argument("--seed", type=whole_number, default=None, help="one first scene seed (--seeds S)")
    faithful.add_argument("--n", type=positive_int, default=None,
                          help="held-out questions per seed, one per scene (default 200)")
    faithful.add_argument("--methods", default=None,
                          help="comma-separated explanation methods (default: every registered one that explains "
                               "VQA answers)")
    faithful.add_argument("--vcr", type=whole_number_from(0), default=0,
                          help="VCR Q->A items per seed for the VCR table (default 0: none)")
    faithful.add_argument("--vcr-model", default=None, help="the VCR Q->A model (default vle-tiny-shapes-vcr-q2a)")
    faithful.add_argument("--by-family", action="store_true", help="also print per-family tables")
    faithful.add_argument("--json", action="store_true",
                          help="print one JSON object: per method each metric as {value, low, high}, paired, "
                               "by_family, vcr, default")
    counterfactual = add("counterfactual", cmd_counterfactual,
                         "the object-removal study: answer changes and methods' removal correlation")
    counterfactual.add_argument("--seed", type=whole_number, default=None,
                                help="first held-out scene seed (>= 1000000)")
    counterfactual.add_argument("--n", type=positive_int, default=100,
                                help="number of held-out questions, one per scene")
    counterfactual.add_argument("--methods", default=None,
                                help="comma-separated explanation methods (default: the faithfulness benchmark's)")
    counterfactual.add_argument("--json", action="store_true",
                                help='one JSON object: {"result", "model", "dtype"}')
    batch = add("batch", cmd_batch, "a model over a dataset: predictions and explanations stored in a run folder")
    batch.add_argument("--data", required=True, choices=("shapes", "vqa2", "vcr", "jsonl", "csv", "hf"))
    batch.add_argument("--out", required=True, help="the run folder (created; rerunning the command resumes it)")
    batch.add_argument("--methods", default="coattention_relevance,rollout,raw_attention",
                       help="comma-separated explanation methods, or none")
    batch.add_argument("--batch-size", type=positive_int, default=16)
    batch.add_argument("--seed", type=whole_number, default=None, help="shapes: first held-out scene seed")
    batch.add_argument("--n", type=positive_int, default=200, help="shapes: number of held-out scenes")
    batch.add_argument("--task", choices=VCR_TASKS, default=None, help="vcr (and shapes: VCR items): q2a or qa2r")
    batch.add_argument("--questions", help="vqa2: the questions JSON")
    batch.add_argument("--annotations", help="vqa2: the annotations JSON (optional); vcr: val.jsonl")
    batch.add_argument("--images", help="vqa2, vcr: the image folder; jsonl, csv: where relative image paths start")
    batch.add_argument("--file", help="jsonl, csv: the table of image, question and optional answer")
    batch.add_argument("--dataset", help="hf: a folder written by datasets' save_to_disk")
    batch.add_argument("--split", default=None, help="hf: the split, if the dataset has several")
    batch.add_argument("--image-column", default="image")
    batch.add_argument("--question-column", default="question")
    batch.add_argument("--answer-column", default="answer")
    batch.add_argument("--limit", type=positive_int, default=None, help="only the first N examples of the data")
    batch.add_argument("--json", action="store_true", help="print the run's counts as one JSON object")
    return parser


USER_ERRORS = (InputError, ValueError, TypeError, FileNotFoundError, IsADirectoryError, PermissionError)


def main(argv=None) -> int:
    """Run one command. A user error prints what is wrong and exits with 2; an internal error prints one line (the
    traceback with --debug) and exits with 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except KeyboardInterrupt:
        print(f"vle-workbench {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001  (the one place every failure becomes a message)
        backends = sys.modules.get("vle.llm.backends")  # an LLM error can only come once it was imported
        llm_errors = (backends.LLMError,) if backends else ()
        user = isinstance(error, USER_ERRORS + llm_errors) or _is_user_os_error(error)
        if args.debug and not user:
            traceback.print_exc()
        print(f"vle-workbench {args.command}: error: {_one_line(error)}", file=sys.stderr)
        if not user:
            print(f"This is a bug in vle-workbench ({type(error).__name__}); rerun with --debug for the traceback "
                  "and report it.", file=sys.stderr)
            return 1
        return 2
    return 0


def _is_user_os_error(error: BaseException) -> bool:
    """Files that cannot be read or written (permissions, a full disk, a missing folder) are the user's to fix."""
    return isinstance(error, OSError) and error.errno is not None


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    return " ".join(text.split()) if len(text) < 600 else " ".join(text[:600].split()) + " ..."


if __name__ == "__main__":
    sys.exit(main())
