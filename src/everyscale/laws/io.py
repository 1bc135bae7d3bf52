"""Reading scaling-law data points (CSV, JSON lines, Parquet, or records) and validating them.

A data point is one evaluation of one model: `N` (parameters), `D` (tokens seen) or `C` (FLOPs),
`loss`, and optionally `run` (several checkpoints of one training run share it, and the
bootstrap resamples them together), `U` (unique tokens), `M` (tokens per parameter), `lr` and
`error` (a downstream error rate). Other non-numeric columns (names, notes) are ignored.

Derived columns (BRIEF §3): `D = C / (6 N)` when D is absent, `C = 6 N D` when C is absent,
`M = D / N` when M is absent. When several learning rates were tried for the same (N, D[, U]),
only the best (lowest loss) is kept, since a scaling law describes well-tuned runs; the number
of rows dropped is recorded in `Points.notes`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

POSITIVE_COLUMNS = ("N", "D", "C", "U", "M", "loss", "error", "lr")


@dataclass
class Points:
    """Validated columns of scaling-law data.

    `columns` maps a column name to a float array (all of length `n`); `run` holds the run id of
    each point (every point its own run when the file has no `run` column). `embeddings` records
    whether N counts embedding parameters (None: not stated); `notes` says what loading did.
    """

    columns: dict[str, np.ndarray]
    run: np.ndarray
    embeddings: bool | None = None
    notes: list[str] = field(default_factory=list)
    source: str = "records"

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
        )

    def require(self, names: Sequence[str], why: str) -> None:
        """Raise a ValueError naming the columns in `names` that are missing."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise ValueError(
                f"{why} needs column(s) {missing}, but {self.source} has only "
                f"{sorted(self.columns)}; add the column(s) to the data"
            )

    def parameter_count(self) -> str:
        if self.embeddings is None:
            return "unspecified (say whether N counts embeddings: load_points(..., embeddings=))"
        return "N includes embedding parameters" if self.embeddings else "N excludes embeddings"


def _read_records(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    if suffix in (".jsonl", ".ndjson", ".json"):
        text = path.read_text()
        if suffix == ".json" and text.lstrip().startswith("["):
            return json.loads(text)
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {lineno} is not valid JSON: {err}") from None
        return records
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as err:  # pragma: no cover - pyarrow is an optional extra
            raise ValueError(
                "reading Parquet needs pyarrow: pip install 'everyscale[parquet]'"
            ) from err
        return pq.read_table(path).to_pylist()
    raise ValueError(
        f"{path}: unknown file type {suffix!r}; use .csv, .jsonl (JSON lines) or .parquet"
    )


def _rows_text(rows: np.ndarray) -> str:
    rows = [int(r) for r in rows]
    shown = ", ".join(str(r) for r in rows[:10])
    return f"rows [{shown}{', ...' if len(rows) > 10 else ''}] (0-based, header excluded)"


def _to_float_column(name: str, values: list, source: str) -> np.ndarray:
    out = np.empty(len(values))
    bad = []
    for i, v in enumerate(values):
        try:
            out[i] = float(v) if v not in (None, "") else np.nan
        except (TypeError, ValueError):
            bad.append(i)
    if bad:
        raise ValueError(f"column {name!r} in {source}: non-numeric values in {_rows_text(bad)}")
    return out


def load_points(
    path_or_records: str | Path | Iterable[Mapping],
    *,
    embeddings: bool | None = None,
    keep_best_lr: bool = True,
) -> Points:
    """Read and validate data points from a file (CSV, JSON lines, Parquet) or a list of dicts.

    Columns: `loss`, and for laws in N and D: `N` and `D` or `C`; optional `run`, `U`, `M`,
    `lr`, `error`, `embeddings` (a constant true/false column saying whether N counts
    embeddings; or pass `embeddings=`).
    Raises ValueError naming the column and rows for missing, non-numeric, non-finite or
    non-positive values.
    """
    if isinstance(path_or_records, (str, Path)):
        path = Path(path_or_records)
        if not path.exists():
            raise FileNotFoundError(f"data file {str(path)!r} does not exist; check the path")
        records = _read_records(path)
        source = str(path)
    else:
        records = [dict(r) for r in path_or_records]
        source = "records"
    if not records:
        raise ValueError(f"{source} holds no data points; give at least one row")

    names = list(dict.fromkeys(k for r in records for k in r))
    raw = {name: [r.get(name) for r in records] for name in names}
    notes: list[str] = []

    if "embeddings" in raw:
        flags = {str(v).strip().lower() for v in raw.pop("embeddings")}
        if len(flags) != 1 or not flags <= {"true", "false", "1", "0"}:
            raise ValueError(f"column 'embeddings' in {source} must be one constant true/false")
        file_flag = flags.pop() in ("true", "1")
        if embeddings is not None and embeddings != file_flag:
            raise ValueError(
                f"embeddings={embeddings} contradicts the 'embeddings' column in {source}"
            )
        embeddings = file_flag

    run = raw.pop("run", None)
    run_ids = np.array(
        [str(i) for i in range(len(records))] if run is None else [str(r) for r in run]
    )
    columns = {}
    for name, values in raw.items():
        if name in POSITIVE_COLUMNS or all(_is_number(v) for v in values):
            columns[name] = _to_float_column(name, values, source)

    points = Points(columns=columns, run=run_ids, embeddings=embeddings, notes=notes, source=source)
    points.require(["loss"], "every scaling-law data set")
    _check_values(points, [c for c in POSITIVE_COLUMNS if c in columns])

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


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
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
