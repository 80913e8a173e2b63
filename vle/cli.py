"""``vle-workbench``: the pipelines from the command line.

    vle-workbench vqa IMAGE "QUESTION" [--model M] [--top-k K]
    vle-workbench itm IMAGE "TEXT" [--model M]
    vle-workbench pbc IMAGE "PHRASE" [--model M] [--out overlay.png]
    vle-workbench vcr ANNOTATION.json --image IMAGE --metadata META.json [--task q2a|qa2r] [--model M]
    vle-workbench classify IMAGE LABEL [LABEL ...] [--template "a photo of a {}."] [--model M]
    vle-workbench vqa-llm IMAGE "QUESTION" [--base-url URL] [--model LLM] [--local MODEL] [--json]
    vle-workbench explain IMAGE "QUESTION" [--method M] [--answer A] [--rather-than B] [--out report.html]
    vle-workbench demo     (the main job: a VQA run with the embedded model on a scene from pics/)
    vle-workbench train --out DIR [--recipe full|teaching]
    vle-workbench evaluate [--seed S] [--n N] [--json]
    vle-workbench faithfulness [--seed S] [--n N] [--json]   (explanation methods: faithfulness and localisation)

Models are shipped names (offline), local folders or hub ids.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_MODELS = {
    "vqa": "vle-tiny-shapes-vqa", "itm": "vle-tiny-shapes", "pbc": "vle-tiny-shapes", "classify": "vle-tiny-shapes",
    "vcr_q2a": "vle-tiny-shapes-vcr-q2a", "vcr_qa2r": "vle-tiny-shapes-vcr-qa2r",
}


def _pipe(task: str, model: str | None):
    from .pipelines import pipeline

    return pipeline(task, model or DEFAULT_MODELS[task])


def _print(value) -> None:
    print(json.dumps(value, indent=2))


def cmd_vqa(args) -> None:
    _print(_pipe("vqa", args.model)(image=args.image, question=args.question, top_k=args.top_k))


def cmd_itm(args) -> None:
    _print(_pipe("itm", args.model)(image=args.image, text=args.text))


def cmd_pbc(args) -> None:
    result = _pipe("pbc", args.model)(image=args.image, text=args.text)
    result["image"].save(args.out)
    _print({"scores": result["scores"].round(4).tolist(), "overlay": args.out})


def cmd_vcr(args) -> None:
    with open(args.annotation) as handle:
        annotation = json.load(handle)
    with open(args.metadata) as handle:
        metadata = json.load(handle)
    task = f"vcr_{args.task}"
    _print(_pipe(task, args.model)(image=args.image, annotation=annotation, metadata=metadata))


def cmd_classify(args) -> None:
    _print(_pipe("classify", args.model)(image=args.image, candidate_labels=args.labels,
                                         hypothesis_template=args.template))


def cmd_vqa_llm(args) -> None:
    from .llm import vqa_with_llm

    llm, settings = args.local, {}
    if not llm:  # a chat-completions server; unset values come from VLE_LLM_BASE_URL / VLE_LLM_MODEL / ...
        llm, settings = args.base_url, {"model": args.model, "timeout": args.timeout}
    pipe = vqa_with_llm(args.vqa_model, captioner=args.captioner, llm=llm, llm_settings=settings)
    result = pipe(image=args.image, question=args.question, top_k=args.top_k)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())


def cmd_demo(args) -> None:
    from .hub import shipped_models

    if DEFAULT_MODELS["vqa"] in shipped_models():
        from .demo import run_shapes_demo

        run_shapes_demo()
        return
    import numpy as np

    from .testing import tiny_vqa_pipeline

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
    """A VQA explanation as a self-contained HTML report (the same view as the workbench's VQA explorer)."""
    from PIL import Image

    import viz  # rendering stays outside vle: imported only by this command

    from .explain import Explainer, VQAContrast, vqa_answer

    vqa = _pipe("vqa", args.model)
    explainer = Explainer(vqa.model, vqa.processor)
    image = Image.open(args.image).convert("RGB")
    answers = vqa(image=image, question=args.question, top_k=args.top_k)
    target = vqa_answer(vqa.model, args.answer or answers[0]["answer"])
    if args.rather_than:
        other = vqa_answer(vqa.model, args.rather_than)
        target = VQAContrast(target.index, other.index, target.answer, other.answer)
    explanation = explainer.explain(image, args.question, target=target, method=args.method)
    viz.explanation_report_html(explanation, image, args.out,
                                title=f"{args.question} → {answers[0]['answer']}: {explanation.method} "
                                      f"explanation of {explanation.target.label}")
    _print({"answers": answers, "target": explanation.target.label, "method": explanation.method,
            "report": args.out})


def cmd_train(args) -> None:
    from .shapes.train import default_processes, train

    processes = default_processes(args.recipe, limit=args.threads or 8) if args.processes is None else args.processes
    timings = train(args.out, recipe=args.recipe, seed=args.seed, threads=args.threads, processes=processes)
    _print({stage: round(seconds, 1) for stage, seconds in timings.items()})


def cmd_evaluate(args) -> None:
    from .shapes.evaluate import DEFAULT_SEED, evaluate, format_table
    from .shapes.train import run_models

    models = run_models(args.models) if args.models else None
    results = evaluate(seed=DEFAULT_SEED if args.seed is None else args.seed, n=args.n, models=models,
                       progress=not args.json)
    print(json.dumps(results, indent=2) if args.json else format_table(results))


def cmd_faithfulness(args) -> None:
    from .explain.faithfulness import DEFAULT_MODEL, DEFAULT_QUESTIONS, faithfulness, format_table

    n = DEFAULT_QUESTIONS if args.n is None else args.n
    results = faithfulness(seed=args.seed, n=n, model=args.model or DEFAULT_MODEL, progress=not args.json)
    print(json.dumps(results, indent=2) if args.json else format_table(results))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vle-workbench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, handler, help_text):
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(handler=handler)
        command.add_argument("--model", default=None, help="shipped name, folder or hub id")
        return command

    vqa = add("vqa", cmd_vqa, "answer a question about an image")
    vqa.add_argument("image")
    vqa.add_argument("question")
    vqa.add_argument("--top-k", type=int, default=5)
    itm = add("itm", cmd_itm, "probability that a text matches an image")
    itm.add_argument("image")
    itm.add_argument("text")
    pbc = add("pbc", cmd_pbc, "patches that a phrase is about, as an overlay")
    pbc.add_argument("image")
    pbc.add_argument("text")
    pbc.add_argument("--out", default="pbc_overlay.png")
    vcr = add("vcr", cmd_vcr, "VCR multiple choice from an annotation in the VCR format")
    vcr.add_argument("annotation")
    vcr.add_argument("--image", required=True)
    vcr.add_argument("--metadata", required=True)
    vcr.add_argument("--task", choices=("q2a", "qa2r"), default="q2a")
    classify = add("classify", cmd_classify, "zero-shot classification by image-text matching")
    classify.add_argument("image")
    classify.add_argument("labels", nargs="+")
    classify.add_argument("--template", default="a photo of a {}.")
    vqa_llm = sub.add_parser("vqa-llm", help="VQA candidates + a caption → an LLM's short and long answer")
    vqa_llm.set_defaults(handler=cmd_vqa_llm)
    vqa_llm.add_argument("image")
    vqa_llm.add_argument("question")
    vqa_llm.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 "
                                            "(default: $VLE_LLM_BASE_URL)")
    vqa_llm.add_argument("--model", help="the LLM's name there (default: $VLE_LLM_MODEL, else the server's first)")
    vqa_llm.add_argument("--local", help="a transformers text-generation model id or folder instead of a server")
    vqa_llm.add_argument("--vqa-model", default=DEFAULT_MODELS["vqa"], help="shipped name, folder or hub id")
    vqa_llm.add_argument("--captioner", help='"shapes" (ITM over the shapes grammar) or a captioning model id')
    vqa_llm.add_argument("--top-k", type=int, default=4)
    vqa_llm.add_argument("--timeout", type=float, default=60.0, help="seconds per LLM request")
    vqa_llm.add_argument("--json", action="store_true", help="print the whole result as JSON")
    explain_cmd = add("explain", cmd_explain, "explain a VQA answer and write a self-contained HTML report")
    explain_cmd.add_argument("image")
    explain_cmd.add_argument("question")
    explain_cmd.add_argument("--method", default="coattention_relevance",
                             help="a registered method (vle.explain.METHODS), e.g. rollout, occlusion, gradcam")
    explain_cmd.add_argument("--answer", default=None, help="the answer to explain (default: the top answer)")
    explain_cmd.add_argument("--rather-than", default=None, help="a second answer: explain why --answer rather "
                                                                 "than this one")
    explain_cmd.add_argument("--top-k", type=int, default=5)
    explain_cmd.add_argument("--out", default="report.html")
    add("demo", cmd_demo, "the main job: VQA with the embedded model on a scene from pics/")
    train = sub.add_parser("train", help="train the shapes-world models (tokenizer, pretraining, VQA, VCR)")
    train.set_defaults(handler=cmd_train)
    train.add_argument("--out", required=True, help="folder for the stage checkpoints (resumes if present)")
    train.add_argument("--recipe", choices=("full", "teaching", "smoke"), default="full")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="CPU threads in all (default: torch's)")
    train.add_argument("--processes", type=int, default=None,
                       help="data-parallel processes, each on its share of every batch (default: one per core, up "
                            "to 8, as many as the batches split into)")
    evaluate = sub.add_parser("evaluate", help="accuracy of the shapes models on held-out scenes")
    evaluate.set_defaults(handler=cmd_evaluate)
    evaluate.add_argument("--seed", type=int, default=None, help="first held-out scene seed (>= 1000000)")
    evaluate.add_argument("--n", type=int, default=200, help="number of held-out scenes")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--models", default=None, help="a training output folder instead of the shipped models")
    faithful = add("faithfulness", cmd_faithfulness, "faithfulness and localisation of every explanation method")
    faithful.add_argument("--seed", type=int, default=None, help="first held-out scene seed (>= 1000000)")
    faithful.add_argument("--n", type=int, default=None,
                          help="number of held-out questions, one per scene (default 200)")
    faithful.add_argument("--json", action="store_true", help="print one JSON object keyed by method")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError, TypeError, OSError) as error:
        print(f"vle-workbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
