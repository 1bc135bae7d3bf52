"""everyscale.bench: which optimizer reaches the target first, measured as AlgoPerf measures it.

    from everyscale.bench import BenchPlan, builtin_workload, run_bench
    plan = BenchPlan([builtin_workload("digits")], ["adamw", "torch_adamw"], trials=2, studies=3)
    result = run_bench(plan, "runs/bench-tiny")  # bench.json, report.md, profile.png

- ``scoring``: performance ratios, profiles and the benchmark score (pure functions);
- ``workloads``: the built-in workloads with their fixed targets, and ``Workload`` for yours;
- ``space``: the search space of each optimizer family;
- ``optimizers``: our presets and the peers (``torch_adamw``, ``torch_muon``, ``sfadamw``,
  ``heavyball_soap``, ``heavyball_psgd``);
- ``trial``: one trial to the target; ``study``: the Optuna harness; ``report``: the outputs.

Reference: Dahl et al., *Benchmarking Neural Network Training Algorithms* (AlgoPerf), 2023.
"""

from everyscale.bench.optimizers import PEERS, get_contender
from everyscale.bench.run import BUDGETS, DEFAULT_OPTIMIZERS, resolve_workloads, run_bench
from everyscale.bench.scoring import (
    R_MAX,
    benchmark_score,
    benchmark_scores,
    performance_profile,
    performance_ratios,
)
from everyscale.bench.space import Range
from everyscale.bench.study import BenchPlan
from everyscale.bench.trial import TrialResult, run_trial
from everyscale.bench.workloads import Workload, builtin_workload

__all__ = [
    "BUDGETS",
    "DEFAULT_OPTIMIZERS",
    "PEERS",
    "R_MAX",
    "BenchPlan",
    "Range",
    "TrialResult",
    "Workload",
    "benchmark_score",
    "benchmark_scores",
    "builtin_workload",
    "get_contender",
    "performance_profile",
    "performance_ratios",
    "resolve_workloads",
    "run_bench",
    "run_trial",
]
