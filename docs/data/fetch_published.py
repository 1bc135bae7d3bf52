"""Fetch the published data the laws docs use, with their licences, into a local folder.

Nothing here is committed to everyscale: each data set stays under its own licence, copied
next to the files made from it.

    python docs/data/fetch_published.py gadre2024      # Gadre et al. 2024 (MIT)
    python docs/data/fetch_published.py ruan2024       # Ruan et al. 2024 (Apache-2.0)
    python docs/data/fetch_published.py all --out DIR  # default: $EVERYSCALE_DATA or
                                                       # ~/.cache/everyscale/published
    python docs/data/fetch_published.py gadre2024 --from-clone ~/src/scaling   # offline

Files are downloaded from raw.githubusercontent.com at pinned commits (or read from a local
clone of the same repository with --from-clone) and turned into CSV files `everyscale fit`
reads. Standard library only.

gadre2024/ (github.com/mlfoundations/scaling, the paper's released evaluations):
  loss_runs.csv    the 5 runs the over-training law is fitted on (Gadre et al. 2024, Table 2
                   defaults: RedPajama, the four small models at M = 20 and the 11M model at
                   M = 320); loss = the C4 eval loss
  error_runs.csv   those 5 and the 1.4B M = 20 run: loss and the 17-task average top-1 error
  targets.csv      the runs the paper predicts: 1.4B at M = 640 and 6.9B at M = 20
ruan2024/ (github.com/ryoungj/ObsScaling, the paper's collected evaluations):
  qwen15_mmlu.csv  Qwen1.5 base models with a published FLOP count: C (FLOPs) and the MMLU
                   error (1 - accuracy)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import urllib.request
from pathlib import Path

GADRE = {
    "repo": "mlfoundations/scaling",
    "commit": "a003c4913793ac2ae7ef87b28ecb562955d026d5",
    "licence": "LICENSE.txt",
}
RUAN = {
    "repo": "ryoungj/ObsScaling",
    "commit": "4d6e1e43fd2635d04654aa77d1df9d5266ea0382",
    "licence": "LICENSE",
}

# Gadre et al. 2024's 17-task split (the paper's Table 2 default for the error law), as named
# in the released evaluations.
GADRE_17_TASKS = (
    "bigbench_operators", "pubmed_qa_labeled", "hellaswag_zeroshot", "boolq", "arc_easy",
    "coqa", "bigbench_dyck_languages", "lambada_openai", "bigbench_novel_concepts", "winograd",
    "bigbench_cs_algorithms", "commonsense_qa", "bigbench_qa_wikidata", "hellaswag", "copa",
    "squad", "piqa",
)  # fmt: skip
SMALL = ("d=96_l=8_h=4", "d=512_l=8_h=4", "d=576_l=24_h=8", "d=1024_l=24_h=8")
LOSS_RUNS = [f"rpj-{m}-1.0" for m in SMALL] + ["rpj-d=96_l=8_h=4-16.0"]
ERROR_RUNS = [*LOSS_RUNS, "rpj-open_lm_1b-1.0"]
TARGET_RUNS = ["rpj-open_lm_1b-32.0", "rpj-open_lm_7b-1.0"]


def default_out() -> Path:
    return Path(os.environ.get("EVERYSCALE_DATA", Path.home() / ".cache/everyscale/published"))


class Source:
    """Files of one repository at one commit: downloaded, or read from a local clone."""

    def __init__(self, spec: dict, clone: Path | None):
        self.spec, self.clone = spec, clone

    def read(self, path: str) -> bytes:
        if self.clone is not None:
            return (self.clone / path).read_bytes()
        url = f"https://raw.githubusercontent.com/{self.spec['repo']}/{self.spec['commit']}/{path}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.read()
        except OSError as err:
            raise SystemExit(
                f"could not download {url}: {err}\n"
                f"(no network? clone https://github.com/{self.spec['repo']} and pass "
                "--from-clone PATH)"
            ) from None

    def provenance(self, what: str) -> str:
        origin = f"https://github.com/{self.spec['repo']} at commit {self.spec['commit']}"
        return (
            f"{what}\n\nMade by everyscale's docs/data/fetch_published.py from {origin}; "
            f"distributed under that repository's licence, copied here as "
            f"{self.spec['licence']}.\n"
        )


def _write(folder: Path, name: str, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    (folder / name).write_text(buffer.getvalue())
    print(f"wrote {folder / name} ({len(rows)} rows)")


def gadre_run(source: Source, name: str) -> dict:
    """N, M, D, the C4 eval loss and the 17-task average error of one released run."""
    model = json.loads(source.read(f"exp_data/models/{name}.json"))
    hyper = model["hyperparameters"]
    losses = {r["val_data"][0].split("/")[-2]: r["loss"] for r in model["results"]}
    evals = json.loads(source.read(f"exp_data/evals/evaluation_{name}_heavy.json"))
    accuracy = evals["eval_metrics"]["icl"]
    errors = [1.0 - accuracy[task] for task in GADRE_17_TASKS]
    return {
        "run": name,
        "N": hyper["params"],
        "M": 20.0 * hyper["chinchilla_multiplier"],  # M = 20 x the Chinchilla multiplier
        "D": hyper["tokens"],
        "loss": losses["c4_val"],
        "error": sum(errors) / len(errors),
    }


def fetch_gadre(out: Path, clone: Path | None) -> None:
    source = Source(GADRE, clone)
    folder = out / "gadre2024"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "LICENSE.txt").write_bytes(source.read(GADRE["licence"]))
    runs = {name: gadre_run(source, name) for name in {*ERROR_RUNS, *TARGET_RUNS}}
    columns = ["run", "N", "M", "D", "loss", "error"]

    def rows(names):
        return [[runs[n][c] for c in columns] for n in names]

    _write(folder, "loss_runs.csv", columns, rows(LOSS_RUNS))
    _write(folder, "error_runs.csv", columns, rows(ERROR_RUNS))
    _write(folder, "targets.csv", columns, rows(TARGET_RUNS))
    (folder / "SOURCE.md").write_text(
        source.provenance(
            "Gadre et al. 2024, Language models scale reliably with over-training and on "
            "downstream tasks: RedPajama runs, C4 eval loss, 17-task average top-1 error."
        )
    )


def fetch_ruan(out: Path, clone: Path | None) -> None:
    source = Source(RUAN, clone)
    folder = out / "ruan2024"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "LICENSE").write_bytes(source.read(RUAN["licence"]))
    table = csv.DictReader(io.StringIO(source.read("eval_results/base_llm_benchmark_eval.csv")
                                       .decode("utf-8")))  # fmt: skip
    rows = []
    for row in table:
        if row["Model Family"] == "Qwen1.5" and row["FLOPs (1E21)"]:
            flops = float(row["FLOPs (1E21)"]) * 1e21
            rows.append([row["Model"], float(row["Model Size (B)"]) * 1e9, flops,
                         1.0 - float(row["MMLU"])])  # fmt: skip
    rows.sort(key=lambda r: r[2])
    _write(folder, "qwen15_mmlu.csv", ["run", "N", "C", "error"], rows)
    (folder / "SOURCE.md").write_text(
        source.provenance(
            "Ruan et al. 2024, Observational Scaling Laws and the Predictability of Language "
            "Model Performance: Qwen1.5 base models, training FLOPs and MMLU error."
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["gadre2024", "ruan2024", "all"])
    parser.add_argument("--out", type=Path, default=default_out(),
                        help="folder to write into (default: $EVERYSCALE_DATA or "
                        "~/.cache/everyscale/published)")  # fmt: skip
    parser.add_argument("--from-clone", type=Path, metavar="PATH",
                        help="read from a local clone of the repository instead of "
                        "downloading (one data set at a time)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.from_clone is not None and args.dataset == "all":
        parser.error("--from-clone reads one repository: name one data set")
    if args.dataset in ("gadre2024", "all"):
        fetch_gadre(args.out, args.from_clone)
    if args.dataset in ("ruan2024", "all"):
        fetch_ruan(args.out, args.from_clone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
