"""The Hugging Face ``Trainer`` with an everyscale optimizer: train, save, resume, equal.

The recipe of docs/models.md: ``Trainer(..., optimizers=(everyscale.optimizer(model, preset),
scheduler))``. A run resumed from its checkpoint ends with the same weights, bit for bit, as the
run that was not interrupted.
"""

from __future__ import annotations

import pytest
import torch

import everyscale

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import hf_zoo  # noqa: E402  (after the skips)

STEPS, SAVE_AT = 6, 3


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 24) -> None:
        self.tokens = hf_zoo._tokens(batch=n, length=12, seed=3)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i], "labels": self.tokens[i]}


def _trainer(out, preset: str, perturb: bool = False) -> transformers.Trainer:
    model, _, _ = hf_zoo.build("gpt2")
    if perturb:  # other weights: only a real load of the checkpoint can end equal
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=0.1)
    opt = everyscale.optimizer(model, preset)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / (STEPS + 1))
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=STEPS, save_steps=SAVE_AT, save_strategy="steps",
        per_device_train_batch_size=4, logging_steps=1000, report_to=[], use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    return transformers.Trainer(
        model=model, args=args, train_dataset=_Tokens(), optimizers=(opt, schedule)
    )


@pytest.mark.parametrize("preset", ["scion", "muon"])
def test_trainer_resumes_bit_for_bit(tmp_path, preset):
    straight = _trainer(tmp_path / "a", preset)
    first = {n: p.detach().clone() for n, p in straight.model.named_parameters()}
    straight.train()
    final = {n: p.detach() for n, p in straight.model.named_parameters()}
    assert any(not torch.equal(first[n], final[n]) for n in final)  # it trained

    resumed = _trainer(tmp_path / "a", preset, perturb=True)  # a fresh model and optimizer
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / f"checkpoint-{SAVE_AT}"))
    assert resumed.state.global_step == STEPS
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p.detach(), final[name]), name
    assert resumed.optimizer.param_groups[0]["preset"] == preset
    assert resumed.optimizer.optimizer.steps_taken == STEPS  # 3 loaded + 3 run
