"""`everyscale bench` end to end (--budget tiny, seconds) and its bad-input errors."""

import fcntl
import json
import math
import shutil

import pytest

from everyscale.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny"
    rc = main(["bench", "--budget", "tiny", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_tiny_writes_the_report(tiny, capsys):
    result = json.loads((tiny / "bench.json").read_text())
    assert result["baseline"] == "torch_adamw"
    assert set(result["scores"]) == {"adamw", "torch_adamw"}
    assert max(result["scores"].values()) == 1.0  # the fastest on the only workload
    assert all(0 <= b <= 1 for b in result["scores"].values())
    assert result["vs_baseline"]["torch_adamw"]["digits"] == 1.0
    for studies in result["studies_detail"]["digits"].values():
        assert len(studies) == 3 and all(s["trials"] == 2 for s in studies)
    assert result["overhead"]["trials"] == 12
    stored = result["overhead_from_storage"]["digits"]
    assert stored["trials"] == 6 * 2 and 0 <= stored["overhead_share"] < 1
    steps = result["steps_to_target"]["torch_adamw"]["digits"]
    assert steps is None or (steps % 5 == 0 and 0 < steps <= 200)  # evaluated every 10 steps
    assert result["machine"]["cpu"]
    report = (tiny / "report.md").read_text()
    assert "Time to target against tuned torch_adamw" in report and "| adamw |" in report
    assert (tiny / "profile.png").stat().st_size > 1000
    assert (tiny / "studies.db").exists()


def test_seconds_to_target_are_medians_of_the_studies_fastest_trials(tiny):
    result = json.loads((tiny / "bench.json").read_text())
    for name, studies in result["studies_detail"]["digits"].items():
        times = sorted(math.inf if s["seconds"] is None else s["seconds"] for s in studies)
        recorded = result["seconds_to_target"][name]["digits"]
        assert (math.inf if recorded is None else recorded) == times[1]


def test_a_used_out_needs_resume_and_resume_adds_nothing(tiny, capsys):
    assert main(["bench", "--budget", "tiny", "--out", str(tiny), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    before = json.loads((tiny / "bench.json").read_text())
    assert main(["bench", "--budget", "tiny", "--out", str(tiny), "--quiet", "--resume"]) == 0
    after = json.loads((tiny / "bench.json").read_text())
    assert after["seconds_to_target"] == before["seconds_to_target"]
    assert after["overhead"]["trials"] == 0  # every trial was read back from the storage


def test_resume_with_other_settings_is_refused(tiny, capsys):
    argv = ["bench", "--budget", "tiny", "--out", str(tiny), "--resume", "--trials", "3"]
    assert main([*argv, "--quiet"]) == 2
    assert "other settings (trials" in capsys.readouterr().err


def test_resume_with_another_optimizer_reuses_the_shared_studies(tiny, tmp_path):
    out = tmp_path / "more"
    shutil.copytree(tiny, out)
    before = json.loads((out / "bench.json").read_text())
    argv = ["bench", "--budget", "tiny", "--optimizers", "adamw,torch_adamw,signum"]
    assert main([*argv, "--out", str(out), "--resume", "--quiet"]) == 0
    after = json.loads((out / "bench.json").read_text())
    assert after["overhead"]["trials"] == 6  # signum's 3 studies x 2 trials, nothing else
    for name in ("adamw", "torch_adamw"):
        assert after["seconds_to_target"][name] == before["seconds_to_target"][name]
    assert set(json.loads((out / "plan.json").read_text())["optimizers"]) == {
        "adamw",
        "torch_adamw",
        "signum",
    }


def test_a_locked_out_is_refused(tmp_path, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    with open(out / ".bench.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["bench", "--budget", "tiny", "--out", str(out), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workloads", "imagenet"], "unknown workload 'imagenet'.*--workloads"),
        (["--optimizers", "adamx"], "unknown optimizer 'adamx'.*--optimizers"),
        (["--target", "digits=0.001"], "--target digits=0.001: no reference run reached it"),
        (["--target", "gpt=2"], "--target gpt: not among --workloads"),
        (["--space", "adamw.lr=1e-2:1e-4:log"], r"adamw\.lr.*empty"),
        (["--space", "sgd.lr=1e-2:1e-1"], "'sgd' is not among --optimizers"),
        (["--option", "adamw.eps"], "--option: write PRESET.KEY=VALUE"),
        (["--storage", "nosuchdb://x"], "--storage nosuchdb://x: cannot open"),
        (["--trials", "0"], "--trials must be an integer >= 1"),
        (["--workloads", "nomodule_xyz:thing"], "--workloads nomodule_xyz:thing: cannot import"),
    ],
)
def test_bad_input_names_the_flag(tmp_path, capsys, extra, message):
    argv = ["bench", "--budget", "tiny", "--out", str(tmp_path / "b"), "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("everyscale bench: error:")
    import re

    assert re.search(message, err), err


def test_a_users_workload_by_module_attribute(tmp_path, monkeypatch):
    (tmp_path / "my_workload.py").write_text(
        "from torch import nn\n"
        "from everyscale.bench import Workload\n"
        "from everyscale.train import TrainConfig\n"
        "def mine():\n"
        "    return Workload('mine', TrainConfig(model='mlp', data='digits', batch_size=32,\n"
        "                    steps=40), target=0.6, metric='val_error', eval_every=10,\n"
        "                    model_factory=lambda: nn.Sequential(nn.Flatten(),\n"
        "                                                        nn.Linear(64, 10)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "b"
    argv = [
        "bench",
        "--workloads",
        "my_workload:mine",
        "--optimizers",
        "adamw",
        "--trials",
        "1",
        "--studies",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    result = json.loads((out / "bench.json").read_text())
    assert result["workloads"]["mine"]["model"] == "custom"
    assert result["seconds_to_target"]["adamw"]["mine"] is not None


def test_help_ends_with_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "example:\n  everyscale bench --budget tiny" in capsys.readouterr().out
