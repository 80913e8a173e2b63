"""The results of a batch run on disk: Parquet parts plus a manifest, queried through DuckDB.

    RUN/manifest.json         model, dtype, methods, data source and fingerprint, code version, counts
    RUN/parts/part-r000-000000.parquet   one file per process per batch of finished examples
    RUN/skipped-r000.jsonl    examples that could not be run, with the reason

Every part is written to a temporary name and renamed into place, so an interrupted run never leaves a corrupt file,
and a part holds only finished examples, so rerunning the same command skips what is done. Explanations are stored
compact (float16 bytes), so filtering and sorting over a large run reads only the small columns.

>>> import tempfile
>>> store = RunStore(tempfile.mkdtemp())
>>> path = store.write_part(0, [{"id": "a", "probability": 0.9}])
>>> run = open_run(store.root)
>>> run.query("select id, probability from examples").fetchall()
[('a', 0.9)]
"""

from __future__ import annotations

import glob
import json
import os
import threading

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError, write_atomically

MANIFEST, PARTS, SKIPPED = "manifest.json", "parts", "skipped-r{rank:03d}.jsonl"
FORMAT = 1


def encode(array) -> bytes:
    """A float array as compact float16 bytes (relevance maps, pooled representations)."""
    return np.asarray(array, dtype=np.float16).tobytes()


def decode(data: bytes, shape=None) -> np.ndarray:
    array = np.frombuffer(data, dtype=np.float16).astype(np.float32)
    return array.reshape(shape) if shape is not None else array


class RunStore:
    """Writes one run's folder: the manifest, parts and skip logs (each process its own parts and log)."""

    def __init__(self, root: str, create: bool = True):
        self.root = os.fspath(root)
        if create:
            os.makedirs(os.path.join(self.root, PARTS), exist_ok=True)

    # -- manifest ----------------------------------------------------------------------------------------------

    def manifest(self) -> dict | None:
        path = os.path.join(self.root, MANIFEST)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    def write_manifest(self, manifest: dict) -> None:
        write_atomically(os.path.join(self.root, MANIFEST), json.dumps({**manifest, "format": FORMAT}, indent=2)
                     .encode("utf-8"))

    def check_same_run(self, settings: dict,
                       keys=("model", "dtype", "methods", "data", "fingerprint", "batch_size")) -> None:
        """A folder that holds another run (another model, methods, dtype or data) is refused, not mixed."""
        existing = self.manifest()
        if existing is None:
            return
        changed = [key for key in keys if existing.get(key) != settings.get(key)]
        if changed:
            detail = "; ".join(f"{key}: {existing.get(key)!r} there, {settings.get(key)!r} now" for key in changed)
            raise InputError(f"{self.root} holds another run ({detail}): rerun it with the same settings to resume, "
                             "or choose another --out")

    # -- parts -------------------------------------------------------------------------------------------------

    def done_ids(self) -> set[str]:
        """Ids of examples already stored or skipped (a resumed run does not redo them)."""
        ids = set()
        parts = self.part_files()
        if parts:
            ids.update(duckdb.sql(f"select id from read_parquet({parts!r}, union_by_name=true)").fetchnumpy()["id"])
        for log in glob.glob(os.path.join(self.root, "skipped-r*.jsonl")):
            with open(log, encoding="utf-8") as handle:
                ids.update(json.loads(line)["id"] for line in handle if line.strip())
        return {str(i) for i in ids}

    def part_files(self) -> list[str]:
        return sorted(glob.glob(os.path.join(self.root, PARTS, "part-*.parquet")))

    def write_part(self, rank: int, rows: list[dict]) -> str:
        """One part of finished rows, written whole or not at all."""
        existing = glob.glob(os.path.join(self.root, PARTS, f"part-r{rank:03d}-*.parquet"))
        number = 1 + max((int(os.path.basename(p)[10:16]) for p in existing), default=-1)
        path = os.path.join(self.root, PARTS, f"part-r{rank:03d}-{number:06d}.parquet")
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows), buffer, compression="zstd")
        write_atomically(path, buffer.getvalue().to_pybytes())
        return path

    def log_skipped(self, rank: int, example_id: str, reason: str) -> None:
        with open(os.path.join(self.root, SKIPPED.format(rank=rank)), "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"id": example_id, "reason": reason}) + "\n")

    def skipped(self) -> list[dict]:
        records = []
        for log in sorted(glob.glob(os.path.join(self.root, "skipped-r*.jsonl"))):
            with open(log, encoding="utf-8") as handle:
                records += [json.loads(line) for line in handle if line.strip()]
        return records


class Run:
    """A finished (or running) batch run, read through DuckDB: ``query(sql)`` over the view ``examples`` (every
    part), ``to_pandas(columns, where)``, ``explanation(id, method)`` for one stored map."""

    def __init__(self, root: str):
        self.root = os.fspath(root)
        self.store = RunStore(self.root, create=False)
        parts = self.store.part_files()
        if not parts:
            raise InputError(f"{self.root} holds no finished examples (no parts/*.parquet): is it a batch run?")
        self.manifest = self.store.manifest() or {}
        self.connection = duckdb.connect()
        self._local = threading.local()
        self._dataset = None  # the Hugging Face dataset a run's hf:<row> images come from, once opened
        self.connection.execute(f"create view examples as select * from read_parquet({parts!r}, union_by_name=true)")

    @property
    def methods(self) -> list[str]:
        return list(self.manifest.get("methods", []))

    @property
    def columns(self) -> list[str]:
        return [row[0] for row in self.connection.execute("describe examples").fetchall()]

    @property
    def slice_fields(self) -> list[str]:
        return [c.removeprefix("slice_") for c in self.columns if c.startswith("slice_")]

    def query(self, sql: str, parameters=None) -> duckdb.DuckDBPyConnection:
        """Run SQL over the view ``examples``; fetch with ``.fetchall()``, ``.df()`` or ``.fetchnumpy()``. Each
        thread queries through its own cursor (a DuckDB connection is not shared between threads)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self.connection.cursor()
        return cursor.execute(sql, parameters or [])

    def relation(self) -> duckdb.DuckDBPyRelation:
        return self.connection.table("examples")

    def to_pandas(self, columns=None, where: str | None = None, parameters=None):
        """The rows (all, or ``where``) with ``columns`` (default: every column but the stored maps)."""
        columns = columns or [c for c in self.columns if not c.endswith(("__patches", "pooled"))]
        sql = f"select {', '.join(quote(c) for c in columns)} from examples" + (f" where {where}" if where else "")
        return self.query(sql, parameters).df()

    def row(self, example_id: str) -> dict:
        """One example's stored row (maps as bytes), or an InputError naming the id."""
        cursor = self.query("select * from examples where id = ?", [str(example_id)])
        found = cursor.fetchone()
        if found is None:
            raise InputError(f"no example {example_id!r} in {self.root}")
        return dict(zip([d[0] for d in cursor.description], found))

    def image(self, example_id: str, ref: str | None = None):
        """The example's image again, from its reference (``ref``, or the stored one): a file path, a shapes-world
        scene (``shapes:<seed>``), or a row of the Hugging Face dataset folder the run read (``hf:<row>``)."""
        from .image_utils import load_image  # noqa: PLC0415  (images only when asked for)

        if ref is None:
            found = self.query("select image from examples where id = ?", [str(example_id)]).fetchone()
            if found is None:
                raise InputError(f"no example {example_id!r} in {self.root}")
            ref = found[0] or ""
        if ref.startswith("shapes:"):
            from .shapes import make_scene  # noqa: PLC0415

            return make_scene(int(ref.split(":")[1])).image
        if ref.startswith("hf:"):
            _, column, folder = (self.manifest.get("image_refs") or "hf::").split(":", 2)
            if not folder:
                raise InputError(f"{example_id} came from a dataset in memory: open its image from that dataset "
                                 f"(row {ref[3:]})")
            if self._dataset is None:  # opened once: a gallery asks for several rows
                import datasets  # noqa: PLC0415

                self._dataset = datasets.load_from_disk(folder)
            return load_image(self._dataset[int(ref[3:])][column])
        return load_image(ref)

    def explanation(self, example_id: str, method: str) -> dict:
        """One stored explanation: ``patches`` (rows, cols) float32, ``words`` and ``word_scores``."""
        if method not in self.methods:
            raise InputError(f"the run stored no {method!r}; it has {', '.join(self.methods) or 'no method'}")
        row = self.query(f"select grid, words, {quote(method + '__patches')}, {quote(method + '__words')} "
                         "from examples where id = ?", [example_id]).fetchone()
        if row is None:
            raise InputError(f"no example {example_id!r} in {self.root}")
        grid, words, patches, word_scores = row
        return {"patches": decode(patches, (grid, grid)), "words": list(words), "word_scores": np.asarray(word_scores)}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open_run(path: str) -> Run:
    return Run(path)
