"""Reading scaling-law data points (CSV, JSON lines, Parquet, or records) and validating them.

A data point is one evaluation of one model: `N` (parameters), `D` (tokens seen) or `C` (FLOPs),
`loss`, and optionally `run` (several checkpoints of one training run share it, and the
bootstrap resamples them together), `U` (unique tokens), `M` (tokens per parameter), `lr` and
`error` (a downstream error rate). Other non-numeric columns (names, notes) are ignored.

Derived columns (Hoffmann et al. 2022; Gadre et al. 2024): `D = C / (6 N)` when D is absent,
`C = 6 N D` when C is absent, `M = D / N` when M is absent. When several learning rates were
tried for the same (N, D[, U]), only the best (lowest loss) is kept, since a scaling law
describes well-tuned runs; the number of rows dropped is recorded in `Points.notes`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

POSITIVE_COLUMNS = ("N", "D", "C", "U", "M", "loss", "error", "lr")


@dataclass
class Points:
    """Validated columns of scaling-law data.

    `columns` maps a column name to a float array (all of length `n`); `run` holds the run id of
    each point (every point its own run when the file has no `run` column: `run_ids_given` is
    False). `embeddings` records whether N counts embedding parameters (None: not stated);
    `notes` says what loading did; `text_columns` maps each non-numeric column that was set
    aside to an example of its values.
    """

    columns: dict[str, np.ndarray]
    run: np.ndarray
    embeddings: bool | None = None
    notes: list[str] = field(default_factory=list)
    source: str = "records"
    text_columns: dict[str, str] = field(default_factory=dict)
    run_ids_given: bool = False

    def __len__(self) -> int:
        return len(self.run)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    @property
    def has_runs(self) -> bool:
        """True when some run groups several points."""
        return len(np.unique(self.run)) < len(self.run)

    def subset(self, mask: np.ndarray) -> Points:
        """The points where `mask` (boolean or index array) selects."""
        return Points(
            columns={k: v[mask] for k, v in self.columns.items()},
            run=self.run[mask],
            embeddings=self.embeddings,
            notes=list(self.notes),
            source=self.source,
            text_columns=dict(self.text_columns),
            run_ids_given=self.run_ids_given,
        )

    def require(self, names: Sequence[str], why: str) -> None:
        """Raise a ValueError naming the columns in `names` that are missing."""
        missing = [n for n in names if n not in self.columns]
        text = [n for n in missing if n in self.text_columns]
        if text:
            example = self.text_columns[text[0]]
            raise ValueError(
                f"{why} needs numeric column(s) {text}, but in {self.source} they hold text "
                f"(e.g. {example!r}); give numbers"
            )
        if missing:
            raise ValueError(
                f"{why} needs column(s) {missing}, but {self.source} has only "
                f"{sorted(self.columns)}; add the column(s) to the data"
            )

    def parameter_count(self) -> str:
        if self.embeddings is None:
            return (
                "unspecified: say whether N counts embedding parameters (command line: "
                "--embeddings or --no-embeddings; Python: load_points(..., embeddings=True))"
            )
        return "N includes embedding parameters" if self.embeddings else "N excludes embeddings"

    def constant_columns(self, names: Sequence[str]) -> list[str]:
        """Those of `names` that hold one value in every row (nothing to fit against)."""
        return [
            n for n in names if n in self.columns and len(self) > 1 and np.ptp(self.columns[n]) == 0
        ]


TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json")
EXPECTED = (
    "expected a CSV with a header line (e.g. N,D,loss) and one row per point, JSON lines "
    '(one {"N": ..., "D": ..., "loss": ...} per line), a JSON list of such objects, or '
    'columnar JSON {"N": [...], "D": [...], "loss": [...]}'
)


def _read_records(path: Path) -> tuple[list[dict], list[str]]:
    """The file's rows as dicts, and notes on how it was read (format guessed from content)."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as err:  # pragma: no cover - pyarrow is an optional extra
            raise ValueError(
                "reading Parquet needs pyarrow: pip install 'everyscale[parquet]'"
            ) from err
        try:
            return pq.read_table(path).to_pylist(), []
        except Exception as err:  # pyarrow raises its own types for a damaged file
            raise ValueError(f"{path} is not a readable Parquet file: {err}") from None
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the data file (CSV, JSON lines, Parquet)")
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(
            f"{path}: unknown file type {suffix!r}; use .csv, .jsonl (JSON lines), .json or "
            ".parquet"
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a UTF-8 byte-order mark is dropped
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {err.start} is {path.read_bytes()[err.start]:#04x}); "
            "save it as UTF-8 (or give a .parquet file)"
        ) from None
    if not text.strip():
        raise ValueError(f"{path} is empty; {EXPECTED}")
    looks_like_json = text.lstrip()[:1] in ("{", "[")
    if looks_like_json:
        records = _json_records(text, path)
        notes = [f"{path.name} holds JSON, read as such"] if suffix in (".csv", ".tsv") else []
        return records, notes
    if suffix in (".jsonl", ".ndjson", ".json"):
        first = text.lstrip().splitlines()[0][:40]
        raise ValueError(f"{path} does not hold JSON (it starts with {first!r}); {EXPECTED}")
    return _csv_records(text, path)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"duplicated key(s) {twice}")
    return dict(pairs)


def _json_records(text: str, path: Path) -> list[dict]:
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError:
        doc = None  # perhaps JSON lines
    except ValueError as err:
        raise ValueError(f"{path}: {err}; each column must appear once") from None
    if doc is None:
        doc = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                doc.append(json.loads(line, object_pairs_hook=_no_duplicate_keys))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {lineno} is not valid JSON: {err}") from None
            except ValueError as err:
                raise ValueError(f"{path}: line {lineno}: {err}; each column once") from None
    if isinstance(doc, dict):
        return _columnar_records(doc, path)
    if not isinstance(doc, list):
        raise ValueError(f"{path} holds a single JSON {type(doc).__name__}; {EXPECTED}")
    for i, record in enumerate(doc):
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}: item {i} is a JSON {type(record).__name__}, not an object with "
                f"named values; {EXPECTED}"
            )
    return doc


def _columnar_records(doc: dict, path: Path) -> list[dict]:
    """{"N": [...], "loss": [...]} (columns of equal length) as one dict per row."""
    lengths = {k: len(v) if isinstance(v, list) else None for k, v in doc.items()}
    if not doc or any(n is None for n in lengths.values()):
        scalars = [k for k, n in lengths.items() if n is None]
        raise ValueError(
            f"{path} holds one JSON object whose keys {scalars or list(doc)} are not lists; "
            f"{EXPECTED}"
        )
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{path}: columnar JSON needs lists of one length, got lengths {lengths}")
    n = next(iter(lengths.values()))
    return [{k: v[i] for k, v in doc.items()} for i in range(n)]


def _csv_records(text: str, path: Path) -> tuple[list[dict], list[str]]:
    """CSV with its delimiter found from the header line (`,` `;` tab `|`), spaces stripped."""
    lines = [line for line in text.splitlines() if line.strip()]
    header_line = lines[0]
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    delimiter = max(counts, key=counts.get) if max(counts.values()) else ","
    notes = [] if delimiter == "," else [f"{path.name}: fields separated by {delimiter!r}"]
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    if any(not h for h in header):
        raise ValueError(
            f"{path}: the header {header} has an empty column name (column "
            f"{header.index('') + 1}); name every column"
        )
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise ValueError(
            f"{path}: column(s) {twice} appear more than once in the header {header}; keep one "
            "of each (which one holds the data you mean?)"
        )
    if len(rows) == 1:
        raise ValueError(f"{path} has a header {header} but no data rows")
    if len(header) == 1 and not _is_number(header[0]) and "," not in header_line:
        notes.append(f"{path.name}: one column only ({header[0]!r})")
    records = []
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(
                f"{path}: line {lineno} has {len(row)} field(s) but the header has "
                f"{len(header)} {header}; fields are separated by {delimiter!r}"
            )
        records.append({h: v.strip() for h, v in zip(header, row)})
    return records, notes


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically: a temporary file in the same folder, fsync'ed, then
    renamed over `path` (`os.replace`), so a reader never sees a half-written file.

    The laws package sits below `train` and imports no torch, so it keeps this small writer
    instead of `everyscale.train.checkpoint.atomic_write_json`.
    """
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _rows_text(rows: np.ndarray) -> str:
    rows = [int(r) for r in rows]
    shown = ", ".join(str(r) for r in rows[:10])
    return f"rows [{shown}{', ...' if len(rows) > 10 else ''}] (0-based, header excluded)"


def _to_float_column(name: str, values: list, source: str) -> np.ndarray:
    out = np.empty(len(values))
    bad = []
    for i, v in enumerate(values):
        try:
            out[i] = np.nan if v is None or v == "" or isinstance(v, bool) else float(v)
        except (TypeError, ValueError, OverflowError):
            bad.append(i)
    if bad:
        example = values[bad[0]]
        hint = ""
        if isinstance(example, str) and _is_number(example.replace(",", ".")):
            hint = f"; {example!r} has a decimal comma: export the file with decimal points"
        raise ValueError(
            f"column {name!r} in {source}: non-numeric values in {_rows_text(bad)} "
            f"(e.g. {example!r}){hint}"
        )
    return out


def load_points(
    path_or_records: str | Path | Iterable[Mapping],
    *,
    embeddings: bool | None = None,
    keep_best_lr: bool = True,
) -> Points:
    """Read and validate data points from a file (CSV, JSON lines, Parquet) or a list of dicts.

    Columns: the target (`loss`, or `error` for downstream laws, or any column `fit(target=)`
    names), and for laws in N and D: `N` and `D` or `C`; optional `run`, `U`, `M`, `lr`,
    `embeddings` (a constant true/false column saying whether N counts embeddings; or pass
    `embeddings=`). Files people have are read as they are: a UTF-8 byte-order mark, spaces
    after delimiters, `;`, tab or `|` delimiters (found from the header line), columnar JSON
    `{"N": [...], ...}`, and JSON in a file named `.csv`; a column named twice is refused.
    Raises ValueError naming the column and rows for missing, non-numeric, non-finite or
    non-positive values.
    """
    if isinstance(path_or_records, (str, Path)):
        path = Path(path_or_records)
        if not path.exists():
            raise FileNotFoundError(f"data file {str(path)!r} does not exist; check the path")
        records, notes = _read_records(path)
        source = str(path)
    else:
        records, notes = [_as_record(r) for r in path_or_records], []
        source = "records"
    if not records:
        raise ValueError(f"{source} holds no data points; give at least one row")

    names = list(dict.fromkeys(str(k) for r in records for k in r))
    raw = {name: [r.get(name) for r in records] for name in names}

    if "embeddings" in raw:
        flags = {str(v).strip().lower() for v in raw.pop("embeddings")}
        if len(flags) != 1 or not flags <= {"true", "false", "1", "0"}:
            raise ValueError(f"column 'embeddings' in {source} must be one constant true/false")
        file_flag = flags.pop() in ("true", "1")
        if embeddings is not None and embeddings != file_flag:
            raise ValueError(
                f"the 'embeddings' column in {source} says {file_flag} but "
                f"{'--embeddings' if embeddings else '--no-embeddings'} (embeddings="
                f"{embeddings}) was given; drop one of them"
            )
        embeddings = file_flag

    run = raw.pop("run", None)
    run_ids = np.array(
        [str(i) for i in range(len(records))] if run is None else [str(r) for r in run]
    )
    columns, text_columns = {}, {}
    for name, values in raw.items():
        if name in POSITIVE_COLUMNS or all(_is_number(v) for v in values):
            columns[name] = _to_float_column(name, values, source)
        else:
            text_columns[name] = next(str(v) for v in values if not _is_number(v))
    if not columns:
        raise ValueError(
            f"{source} has no numeric column (found {names}, e.g. {records[0]}); {EXPECTED}"
        )

    points = Points(
        columns=columns,
        run=run_ids,
        embeddings=embeddings,
        notes=notes,
        source=source,
        text_columns=text_columns,
        run_ids_given=run is not None,
    )
    _check_values(points, [c for c in POSITIVE_COLUMNS if c in columns])
    for name in points.constant_columns([c for c in POSITIVE_COLUMNS if c in columns]):
        notes.append(f"column {name!r} is constant ({columns[name][0]:g} in every row)")

    if "N" in columns and ("D" in columns or "C" in columns):
        if "D" not in columns:
            columns["D"] = columns["C"] / (6.0 * columns["N"])
            notes.append("D computed as C / (6 N) (no D column)")
        if "C" not in columns:
            columns["C"] = 6.0 * columns["N"] * columns["D"]
            notes.append("C computed as 6 N D (no C column)")
        else:
            # Say how the file counts FLOPs when it is not the 6 N D of the laws' allocation.
            ratio = columns["C"] / (6.0 * columns["N"] * columns["D"])
            if np.max(np.abs(ratio - 1.0)) > 0.01:
                notes.append(
                    f"the file's C is {ratio.min():.3g}-{ratio.max():.3g} x 6 N D (its own FLOP "
                    "count); laws in C use it, allocation assumes C = 6 N D"
                )
        if "M" not in columns:
            columns["M"] = columns["D"] / columns["N"]
    if keep_best_lr and "lr" in columns:
        points = _keep_best_lr(points)
    return points


def _as_record(record) -> dict:
    if not isinstance(record, Mapping):
        raise ValueError(
            f"each record must be a dict of column values, got {type(record).__name__}"
        )
    return dict(record)


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _check_values(points: Points, names: Sequence[str]) -> None:
    for name in names:
        values = points.columns[name]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"column {name!r} in {points.source} has missing or non-finite values in "
                f"{_rows_text(bad)}; fix or drop those rows"
            )
        bad = np.flatnonzero(values <= 0)
        if bad.size:
            raise ValueError(
                f"column {name!r} in {points.source} must be positive; non-positive values in "
                f"{_rows_text(bad)}"
            )


def _keep_best_lr(points: Points) -> Points:
    """Keep the lowest-loss row among rows that differ only in learning rate."""
    key_names = [k for k in ("N", "D", "U") if k in points.columns]
    if not key_names:
        return points
    keys = np.stack([points.columns[k] for k in key_names], axis=1)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.ravel()
    keep = []
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        keep.append(members[np.argmin(points.columns["loss"][members])])
    keep = np.sort(np.array(keep))
    dropped = len(points) - len(keep)
    if dropped:
        points = points.subset(keep)
        points.notes.append(
            f"kept the best learning rate per ({', '.join(key_names)}): "
            f"{dropped} of {dropped + len(keep)} rows dropped"
        )
    return points


def check_for_law(points: Points, inputs: Sequence[str], target: str, law_name: str, n_params: int):
    """Validate that `points` can fit a law: columns present, positive, enough points."""
    if "D" in inputs and "D" not in points.columns:
        raise ValueError(
            f"law {law_name!r} needs column 'D' (tokens), or 'C' (FLOPs) with 'N' so that "
            f"D = C / (6 N); {points.source} has only {sorted(points.columns)}"
        )
    points.require([*inputs, target], f"law {law_name!r}")
    _check_values(points, [*inputs, target])
    if len(points) <= n_params:
        raise ValueError(
            f"law {law_name!r} has {n_params} parameters but {points.source} has only "
            f"{len(points)} points; a fit needs more points than parameters"
        )
