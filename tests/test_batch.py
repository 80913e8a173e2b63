"""Batch runs and their store: the rows a run stores (predictions as the pipeline gives them, explanations as one
example's explanation gives them), resuming after an interruption, skipping bad examples with their reasons, refusing
a model or folder that does not fit, a two-process torchrun launch that stores the same rows as one process, the
command line, and reading a run back through DuckDB and pandas."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vle.batch import run_batch, share
from vle.data import Source, shapes_source, table_source
from vle.errors import InputError
from vle.explain import Session
from vle.shapes import make_scene
from vle.store import decode, open_run

SEED, SCENES = 1_000_003, 3
MODEL = "vle-tiny-shapes-vqa"
SAME_THREADS = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per process in both runs: same sums, same bits


def rows(path):
    return open_run(path).query("select * exclude (seconds) from examples order by index").fetchall()


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = run_batch(shapes_source(SEED, SCENES), MODEL, str(out), batch_size=8, progress=False, part_rows=8)
    return out, summary


def test_run_stores_one_row_per_example(shapes_run):
    out, summary = shapes_run
    examples = list(shapes_source(SEED, SCENES).examples())
    assert summary["examples"] == summary["stored"] == summary["new"] == len(examples) and summary["skipped"] == 0
    run = open_run(out)
    table = run.to_pandas()
    assert list(table.sort_values("index")["id"]) == [e.id for e in examples]
    assert set(run.slice_fields) >= {"family", "relational", "objects"}
    assert table["probability"].between(0, 1).all() and (table["margin"] >= 0).all()
    assert set(table["correct"]) <= {True, False} and table["score"].isin([0.0, 1.0]).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["methods"] == ["coattention_relevance", "rollout",
                                                                        "raw_attention"]
    for method in manifest["methods"]:  # evidence is known for every shapes question with evidence objects
        known = table[f"{method}__pointing"].dropna()
        assert len(known) > 0 and known.isin([0.0, 1.0]).all() and table[f"{method}__mass"].dropna().between(0, 1).all()


def test_stored_answers_and_explanations_match_one_example_at_a_time(shapes_run):
    out, _ = shapes_run
    run, session = open_run(out), Session(MODEL, dtype="float32")
    picked = run.query("select id, question, prediction, probability, top_k from examples order by index "
                       "limit 4").fetchall()
    scenes = {e.id: e for e in shapes_source(SEED, SCENES).examples()}
    for example_id, question, prediction, probability, top_k in picked:
        inputs, answers = session.ask(make_scene(int(example_id.split("-")[1])).image, question, top_k=5)
        assert scenes[example_id].text == question and answers[0]["answer"] == prediction
        assert probability == pytest.approx(answers[0]["score"], abs=1e-5)
        assert [a["answer"] for a in top_k] == [a["answer"] for a in answers]
        for method in run.methods:
            stored = run.explanation(example_id, method)
            live = session.explain(inputs, answer=prediction, method=method)
            assert stored["words"] == list(live.words)
            scale = np.abs(live.patch_scores).max()
            np.testing.assert_allclose(stored["patches"], live.patch_scores, atol=2e-3 * scale, rtol=2e-3)
            np.testing.assert_allclose(stored["word_scores"], live.word_scores, atol=1e-4 * max(scale, 1), rtol=1e-3)


def test_rerun_resumes_and_a_lost_part_is_redone(shapes_run, tmp_path):
    out, _ = shapes_run
    before = rows(out)
    again = run_batch(shapes_source(SEED, SCENES), MODEL, str(out), batch_size=8, progress=False, part_rows=8)
    assert again["new"] == 0 and again["resumed"] == len(before)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    parts = sorted((copy / "parts").glob("*.parquet"))
    parts[0].unlink()
    redone = run_batch(shapes_source(SEED, SCENES), MODEL, str(copy), batch_size=8, progress=False, part_rows=8)
    assert 0 < redone["new"] < len(before)
    assert rows(copy) == before


class Interrupted(Exception):
    pass


def test_an_interrupted_run_leaves_whole_parts_and_finishes_on_rerun(tmp_path):
    source = shapes_source(SEED, 2)
    total = source.total()

    def stop_after(count):
        def examples():
            for number, example in enumerate(source.examples()):
                if number == count:
                    raise Interrupted
                yield example
        return Source(source.name, source.kind, source.fingerprint, examples, source.count, image_refs="shapes")

    with pytest.raises(Interrupted):
        run_batch(stop_after(total // 2), MODEL, str(tmp_path / "a"), batch_size=4, progress=False, part_rows=4)
    assert not [p for p in (tmp_path / "a" / "parts").iterdir() if not p.name.endswith(".parquet")]
    stored = len(open_run(tmp_path / "a").to_pandas())
    assert 0 < stored < total and stored % 4 == 0
    run_batch(source, MODEL, str(tmp_path / "a"), batch_size=4, progress=False, part_rows=4)
    run_batch(source, MODEL, str(tmp_path / "b"), batch_size=4, progress=False, part_rows=4)
    assert rows(tmp_path / "a") == rows(tmp_path / "b")


def test_bad_examples_are_skipped_with_reasons(tmp_path):
    make_scene(SEED).image.save(tmp_path / "scene.png")
    lines = [{"id": "a", "image": "scene.png", "question": "what color is the circle ?", "answer": "red"},
             {"image": "missing.png", "question": "what shape is it ?"},
             {"image": "scene.png", "question": " ".join(["big"] * 400)},
             {"image": "scene.png"}]
    table = tmp_path / "data.jsonl"
    again = json.dumps({"id": "a", "image": "scene.png", "question": "what shape is it ?"})
    table.write_text("\n".join(json.dumps(line) for line in lines) + f"\n{{not json\n{again}\n")
    summary = run_batch(table_source(str(table)), MODEL, str(tmp_path / "run"), methods=["rollout"],
                        progress=False)
    assert summary["stored"] == 1 and summary["skipped"] == 5
    reasons = {record["id"]: record["reason"] for record in open_run(tmp_path / "run").store.skipped()}
    assert "missing.png" in reasons["row-2"] and "too long" in reasons["row-3"]
    assert "lacks question" in reasons["row-4"] and "not JSON" in reasons["row-5"]
    assert [r for i, r in reasons.items() if i.startswith("a#")] == ["the id a appears again in the data"]


def test_a_model_or_folder_that_does_not_fit_is_refused_before_work(tmp_path):
    with pytest.raises(InputError, match="VCR data"):
        run_batch(shapes_source(SEED, 1, kind="vcr"), MODEL, str(tmp_path / "vcr"), progress=False)
    with pytest.raises(InputError, match="QA2R"):
        run_batch(shapes_source(SEED, 1, kind="vcr", task="qa2r"), "vle-tiny-shapes-vcr-q2a", str(tmp_path / "q"),
                  progress=False)
    assert not list((tmp_path / "vcr" / "parts").glob("*")) if (tmp_path / "vcr").exists() else True
    run_batch(shapes_source(SEED, 1), MODEL, str(tmp_path / "run"), methods=["rollout"], progress=False)
    with pytest.raises(InputError, match="holds another run"):
        run_batch(shapes_source(SEED, 1), MODEL, str(tmp_path / "run"), methods=["raw_attention"], progress=False)


def test_vcr_items_are_stored_with_their_choices(tmp_path):
    summary = run_batch(shapes_source(SEED, 3, kind="vcr"), "vle-tiny-shapes-vcr-q2a", str(tmp_path),
                        methods=["coattention_relevance", "occlusion"], progress=False)
    table = open_run(tmp_path).to_pandas()
    assert summary["stored"] == 3 and (table["answers"].map(len) == 4).all()
    assert all(row["prediction"] == row["answers"][row["prediction_index"]] for _, row in table.iterrows())
    assert table["occlusion__image_share"].between(0, 1).all()


def test_share_counts_each_process_examples():
    for total in range(0, 40):
        for world in (1, 2, 3):
            assert sum(share(total, 4, rank, world) for rank in range(world)) == total


def cli(*args, env=None):
    command = [os.path.join(os.path.dirname(sys.executable), "vle-workbench"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env or SAME_THREADS, timeout=600)


def test_torchrun_with_two_processes_stores_the_same_rows(tmp_path):
    arguments = ["batch", "--data", "shapes", "--seed", str(SEED), "--n", "4", "--batch-size", "4", "--json"]
    single = cli(*arguments, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    command = os.path.join(os.path.dirname(sys.executable), "vle-workbench")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--no-python", "--", command,
                *arguments, "--out", str(tmp_path / "two")]
    double = subprocess.run(torchrun, capture_output=True, text=True, env=SAME_THREADS, timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    report = json.loads(double.stdout)["result"]
    assert report["processes"] == 2 and report["stored"] == json.loads(single.stdout)["result"]["stored"]
    assert sorted(p.name[:9] for p in (tmp_path / "two" / "parts").glob("*.parquet")) == ["part-r000", "part-r001"]
    assert rows(tmp_path / "two") == rows(tmp_path / "one")


def test_cli_reports_and_refuses_in_words(tmp_path):
    result = cli("batch", "--data", "vqa2", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "needs --questions and --images" in result.stderr
    result = cli("batch", "--data", "shapes", "--n", "1", "--task", "q2a", "--out", str(tmp_path / "y"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "y" / "manifest.json").read_text())["kind"] == "vcr"


def test_run_reads_back_through_duckdb_without_the_maps(shapes_run):
    out, _ = shapes_run
    run = open_run(out)
    wrong = run.query("select count(*) from examples where not correct").fetchone()[0]
    assert wrong == len(run.to_pandas(where="not correct"))
    assert not [c for c in run.to_pandas().columns if c.endswith("__patches")]
    relation = run.relation().filter("slice_family = 'color'").aggregate("count(*)").fetchall()[0][0]
    assert relation == (run.to_pandas()["slice_family"] == "color").sum()
    pooled = run.query("select pooled from examples limit 1").fetchone()[0]
    assert decode(pooled).shape == (2 * Session(MODEL).model.config.hidden_size,)
    with pytest.raises(InputError, match="no example"):
        run.explanation("nope", "rollout")


def test_an_item_the_model_cannot_read_is_skipped_and_the_run_goes_on(tmp_path):
    from vle.data import vcr_source
    from vle.shapes.tasks_vcr import draw_vcr

    lines = []
    for number, seed in enumerate((SEED, SEED + 1)):
        scene = make_scene(seed)
        annotation, metadata = draw_vcr(scene, np.random.default_rng([seed, 4]), f"{seed}.png")
        annotation["annot_id"] = f"item-{number}"
        if number == 1:  # metadata of another image size: its boxes would land on the wrong patches
            metadata = {**metadata, "width": metadata["width"] * 2}
        scene.image.save(tmp_path / f"{seed}.png")
        (tmp_path / f"{seed}.json").write_text(json.dumps(metadata))
        lines.append(json.dumps(annotation))
    (tmp_path / "val.jsonl").write_text("\n".join(lines) + "\n")
    summary = run_batch(vcr_source(str(tmp_path / "val.jsonl"), str(tmp_path)), "vle-tiny-shapes-vcr-q2a",
                        str(tmp_path / "run"), methods=["rollout"], batch_size=2, progress=False)
    assert summary["stored"] == 1 and summary["skipped"] == 1
    reason = open_run(tmp_path / "run").store.skipped()[0]
    assert reason["id"] == "vcr-item-1" and "could not read it" in reason["reason"] and "image" in reason["reason"]


def test_a_run_over_a_saved_hugging_face_dataset_reopens_its_images(tmp_path):
    import datasets

    from vle.data import hf_source

    scenes = [make_scene(SEED + i) for i in range(2)]
    dataset = datasets.Dataset.from_dict({"image": [s.image for s in scenes],
                                          "question": ["what color is the circle ?", "how many objects are there ?"],
                                          "answer": ["red", "3"]}).cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    summary = run_batch(hf_source(str(tmp_path / "saved")), MODEL, str(tmp_path / "run"), methods=["rollout"],
                        progress=False)
    run = open_run(tmp_path / "run")
    assert summary["stored"] == 2 and run.row("1")["image"] == "hf:1"
    assert np.array_equal(np.asarray(run.image("1")), np.asarray(scenes[1].image))
    assert np.array_equal(np.asarray(run.image("0")), np.asarray(scenes[0].image))
