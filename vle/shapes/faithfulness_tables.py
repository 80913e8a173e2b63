"""The faithfulness benchmark's result as text: the main tables (means with 95% intervals), the paired differences
of the best method per metric against the others, per-family tables, the VCR table, failures and the default method.

>>> cell({"value": 0.939, "low": 0.912, "high": 0.961}), cell({"value": 0.012, "low": -0.01, "high": 0.03}, True)
('0.939 [0.91, 0.96]', '+0.012 [-0.01, +0.03] ')
"""

from __future__ import annotations

import math
import textwrap

from .faithfulness_stats import DIRECTIONS, HIGHER, paired_difference

ARROWS = {HIGHER: "↑", -HIGHER: "↓"}
TITLES = {"pointing_game": "point", "pointing_game_single": "point-1", "relevance_mass": "mass",
          "removal_correlation": "rho", "seconds_per_example": "s/ex", "pos_auc_image": "img+", "neg_auc_image": "img-",
          "ins_auc_image": "img ins", "pos_auc_text": "txt+", "neg_auc_text": "txt-", "ins_auc_text": "txt ins"}
TABLES = (("pointing_game", "pointing_game_single", "relevance_mass", "removal_correlation", "seconds_per_example"),
          ("pos_auc_image", "neg_auc_image", "ins_auc_image"), ("pos_auc_text", "neg_auc_text", "ins_auc_text"))
PAIRED_COLUMNS = ("pointing_game", "pos_auc_image", "ins_auc_image", "removal_correlation")
FAMILY_COLUMNS = ("pointing_game", "pos_auc_image", "removal_correlation")
WIDTH = 21
PROSE = 118  # sentences wrap at this width
LEGEND = ("Means with 95% bootstrap intervals over examples. point: pointing game (point-1: single-object "
          "questions); mass: relevance mass; rho: removal correlation; img, txt: AUC of the answer's probability as "
          "patches or tokens are deleted most relevant first (+), least relevant first (-), or inserted most "
          "relevant first into the blurred image or the padded text (ins). ↑ higher is better, ↓ lower is better.")


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def cell(found: dict | None, signed: bool = False) -> str:
    """``0.939 [0.91, 0.96]``; signed (a difference): ``+0.012 [-0.01, +0.03]``, starred when the interval excludes
    zero; ``-`` without a value."""
    if not found or not _finite(found["value"]):
        return "-"
    sign = "+" if signed else ""
    text = f"{found['value']:{sign}.3f}"
    if _finite(found["low"]) and _finite(found["high"]):
        text += f" [{found['low']:{sign}.2f}, {found['high']:{sign}.2f}]"
    if signed:
        text += "*" if _finite(found["low"]) and (found["low"] > 0 or found["high"] < 0) else " "
    return text


def _title(metric: str) -> str:
    arrow = ARROWS.get(DIRECTIONS.get(metric, -HIGHER))
    return f"{TITLES.get(metric, metric)} {arrow}"


def _has(results: dict, metric: str) -> bool:
    return any(_finite(results[m][metric]["value"]) for m in results["methods"])


def method_tables(results: dict) -> list[str]:
    """The main tables: one row per method, means with intervals (seconds: the mean only)."""
    methods = results["methods"]
    width = max(len(m) for m in [*methods, "method"])
    lines = []
    for columns in TABLES:
        columns = [c for c in columns if _has(results, c)]
        lines.append(f"{'method':<{width}}  " + "  ".join(f"{_title(c):<{WIDTH}}" for c in columns).rstrip())
        for name in methods:
            cells = [cell({**results[name][c], "low": None, "high": None}) if c == "seconds_per_example"
                     else cell(results[name][c]) for c in columns]  # a time's interval says little
            lines.append(f"{name:<{width}}  " + "  ".join(f"{c:<{WIDTH}}" for c in cells).rstrip())
        lines.append("")
    return lines


def best(results: dict, metric: str) -> str | None:
    """The method with the best mean on ``metric`` (``DIRECTIONS``), None if none has one."""
    scored = [m for m in results["methods"] if _finite(results[m][metric]["value"])]
    direction = DIRECTIONS[metric]
    return max(scored, key=lambda m: direction * results[m][metric]["value"], default=None)


def paired_table(results: dict, metrics=PAIRED_COLUMNS) -> list[str]:
    """The best method per metric minus each other method, paired over examples."""
    metrics = [m for m in metrics if best(results, m) is not None]
    if len(results["methods"]) < 2 or not metrics:
        return []
    leaders = {m: best(results, m) for m in metrics}
    width = max(len(m) for m in [*results["methods"], "method"])
    heads = [f"{_title(m)} {leaders[m]}" for m in metrics]
    column = max(WIDTH + 2, *(len(h) for h in heads))
    lines = [*_wrap("Paired differences: the best method per metric minus each other method, with 95% bootstrap "
                    "intervals over the same examples (* the interval excludes 0)."),
             f"{'method':<{width}}  " + "  ".join(f"{h:<{column}}" for h in heads).rstrip()]
    for name in results["methods"]:
        cells = ["" if name == leaders[m] else cell(paired_difference(results, leaders[m], name, m), signed=True)
                 for m in metrics]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:<{column}}" for c in cells).rstrip())
    return [*lines, ""]


def family_tables(results: dict, metrics=FAMILY_COLUMNS) -> list[str]:
    """Per question family, the mean of a few key metrics (intervals in the JSON)."""
    families = results["by_family"]
    if not families:
        return []
    methods = results["methods"]
    width = max(len(m) for m in [*methods, "method"])
    lines = []
    for metric in metrics:
        if not _has(results, metric):
            continue
        heads = [f"{family} ({families[family][methods[0]]['n_examples']})" for family in families]
        column = max(7, *(len(h) for h in heads))
        lines.append(f"{_title(metric)} by family (questions)")
        lines.append(f"{'method':<{width}}  " + "  ".join(f"{h:>{column}}" for h in heads))
        for name in methods:
            values = [families[family][name][metric]["value"] for family in families]
            lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>{column}.3f}" if _finite(v) else f"{'-':>{column}}"
                                                         for v in values))
        lines.append("")
    return lines


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, PROSE, break_on_hyphens=False)


def problems(results: dict) -> list[str]:
    lines = []
    for key, verb in (("failures", "failed"), ("warnings", "warned")):
        for name, found in results.get(key, {}).items():
            lines += _wrap(f"{name} {verb} on {found['count']} of {results['n_examples']} examples (first: "
                           f"{found['first']}){'; left out of those' if key == 'failures' else ''}.")
    return lines


def _scenes(results: dict, per_seed: int) -> str:
    return ", ".join(f"{s}..{s + per_seed - 1}" for s in results["seeds"])


def format_table(results: dict, by_family: bool = False) -> str:
    """The whole result as text (``by_family``: with the per-family tables)."""
    first = results[results["methods"][0]]
    lines = [*_wrap(f"VQA: {results['n_examples']} questions on scenes {_scenes(results, results['n_per_seed'])} "
                    f"({results.get('model', 'the model')}); {first['n_localised']} with evidence, "
                    f"{first['n_single_object']} single-object, {first['n_correlated']} with a removal correlation "
                    f"(at least 3 objects and neither side constant); unperturbed answer probability "
                    f"{first['unperturbed_probability']['value']:.3f}, accuracy "
                    f"{first['unperturbed_accuracy']['value']:.3f}."), ""]
    lines += [*method_tables(results), *paired_table(results)]
    if by_family:
        lines += family_tables(results)
    lines += problems(results)
    vcr = results.get("vcr")
    if vcr:
        head = vcr[vcr["methods"][0]] if vcr["methods"] else None
        lines += ["", *_wrap(f"VCR Q->A: {vcr['n_examples']} items on scenes {_scenes(results, vcr['n_per_seed'])} "
                             f"({vcr.get('model', 'the model')}), the chosen choice explained and scored against the "
                             "objects tagged in the question and the right answer" +
                             (f"; unperturbed choice probability {head['unperturbed_probability']['value']:.3f}, "
                              f"accuracy {head['unperturbed_accuracy']['value']:.3f}." if head else ".")), ""]
        if vcr["methods"]:
            lines += [*method_tables(vcr), *paired_table(vcr)]
            lines += family_tables(vcr) if by_family else []
            lines += problems(vcr)
    lines += [*([""] if lines[-1] else []), *_wrap(LEGEND)]
    default = results.get("default")
    if default:
        verdict = "a clear choice" if default["clear"] else "not a clear choice"
        lines += _wrap(f"Default method: {default['method'] or '-'} ({verdict}): {default['reason']}.")
    return "\n".join(lines)
