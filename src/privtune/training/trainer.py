"""The training loop shared by every method.

One optimizer step ``t`` (1-based):

1. DP runs: the budget guard allows the step and the ledger records it, write-ahead (:mod:`.privacy`);
2. the sampler draws the logical batch (Poisson for DP, fixed-size shuffled batches otherwise);
3. the batch is split into physical micro-batches; each runs forward, per-example losses are checked for NaN/inf,
   and backward — plain (mean over the logical batch) or through the DP engine (clipped per-example sum);
4. DP runs add Gaussian noise ``N(0, sigma^2 C^2)`` to the clipped sum once and divide by the expected batch ``B``
   (noise and Poisson masks from the run's :class:`~privtune.training.randomness.DPRandomness`, keyed by the
   ledger index);
5. the optimizer and the LR schedule step; after the first step the guards check that the update reached the
   model and that the clipped sum is bounded as clipping implies (:meth:`Trainer._check_first_step`);
6. ``on_step`` (the in-training evaluation, :mod:`privtune.training.trajectory`) sees the step's state, outside the
   step's timing;
7. every ``checkpoint_every`` steps (and at the end) a checkpoint is written.

User-level DP (a sampler with ``batch_users``): whole users are sampled and packed into micro-batches without
splitting any user (:func:`~privtune.training.sampling.split_micro_users`); the engine clips each user's summed
gradient, and the noisy sum is divided by the expected number of users.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from privtune.errors import TrainingError, fmt
from privtune.models.loading import autocast
from privtune.training.data import Encoded
from privtune.training.dp.engine import ClipStats, DPEngine, unique_trainable
from privtune.training.distributed import SINGLE, Dist
from privtune.training.losses import per_example_loss
from privtune.training.privacy import BudgetExhausted, PrivacyState, certified
from privtune.training.randomness import DPRandomness
from privtune.training.sampling import split_micro, split_micro_users


#: seconds between refreshes of the epsilon shown in the progress bar
EPS_DISPLAY_S = 10.0


@dataclass
class TrainState:
    """Progress that survives a resume (saved in every checkpoint)."""

    step: int = 0
    loss_curve: list[list[float | None]] = field(default_factory=list)   # [step, mean per-example loss]
    tokens: int = 0
    examples: int = 0
    train_time_s: float = 0.0        # time inside steps, summed over sessions up to the last checkpoint
    clip_n: int = 0
    clip_clipped: int = 0
    empty_batches: int = 0
    guard_checked: bool = False      # first-step guards passed

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TrainOutcome:
    status: str                      # completed | budget_exhausted
    state: TrainState


class Trainer:
    """Runs steps ``state.step + 1 .. planned_steps`` (see the module docstring)."""

    def __init__(self, *, model: nn.Module, task: str, data: Encoded, sampler: Any, optimizer: torch.optim.Optimizer,
                 scheduler: Any, planned_steps: int, physical_batch_size: int, device: torch.device,
                 engine: DPEngine | None = None, privacy: PrivacyState | None = None,
                 randomness: DPRandomness | None = None,
                 checkpoint_every: int = 0, on_checkpoint: Callable[[TrainState], None] | None = None,
                 state: TrainState | None = None, progress: Any = None, method: Any = None,
                 dist: Dist = SINGLE, format_loss: Callable[[float | None], str] | None = None,
                 on_step: Callable[[TrainState], None] | None = None):
        randomness = randomness if randomness is not None else getattr(sampler, "randomness", None)
        if (engine is None) != (privacy is None) or (engine is not None and randomness is None):
            raise TrainingError("`engine` and `privacy` must be given together (DP, with the `randomness` of the noise "
                                "unless the sampler carries it) or not at all.")
        self.model, self.task, self.data, self.sampler = model, task, data, sampler
        self.optimizer, self.scheduler = optimizer, scheduler
        self.planned_steps, self.physical = planned_steps, physical_batch_size
        self.device, self.engine, self.privacy, self.randomness = device, engine, privacy, randomness
        self.checkpoint_every, self.on_checkpoint = checkpoint_every, on_checkpoint
        self.state = state or TrainState()
        self.progress = progress
        # the progress bar's loss text (a DP run's loss is computed without noise: training.record.loss_text)
        self.format_loss = format_loss or (lambda loss: "-" if loss is None else f"{loss:.3f}")
        self.method = method  # optional Method: its before_step/before_update hooks run every step (RGP)
        self.on_step = on_step  # after each step, e.g. the in-training evaluation (not counted in train_time_s)
        self.dist = dist  # data-parallel group (privtune.training.distributed); one process by default
        self.params = engine.params if engine is not None else unique_trainable(model)
        # what the optimizer updates: the differentiated parameters, or (RGP) the tensors their gradients map to
        self.updated = [p for g in optimizer.param_groups for p in g["params"]]
        self._sum_norm = 0.0  # norm of the first step's clipped sum before noise (this process's share)
        self.user_level = hasattr(sampler, "batch_users")
        self._units = 0       # clipped units (examples, or users) of the last step
        if self.user_level and (engine is None or dist.world > 1):
            raise TrainingError("user-level sampling must run with a DP engine in one process. Found "
                                f"{'no engine' if engine is None else f'{dist.world} processes'}: use --nproc 1.")

    # -- one step -------------------------------------------------------------------------------------------------
    def _forward_module(self) -> nn.Module:
        return self.engine.module if self.engine is not None else self.model

    def step(self, t: int) -> tuple[float | None, ClipStats | None, int, int]:
        draw = self.privacy.begin_step() if self.privacy is not None else t
        if self.user_level:  # whole users, never split across micro-batches (one process: checked in __init__)
            users = self.sampler.batch_users(t, draw=draw)
            idx = np.concatenate(users) if users else np.empty(0, dtype=np.int64)
            micros: list[tuple[np.ndarray, np.ndarray | None]] = split_micro_users(users, self.physical)
            self._units = len(users)
        else:
            # rank 0 draws the batch (its DP randomness alone decides) and every rank uses it
            local = self.sampler.batch(t, draw=draw) if self.dist.main else np.empty(0, dtype=np.int64)
            idx = self.dist.same_batch(local, len(self.data))
            micros = [(m, None) for m in split_micro(self.dist.shard(idx), self.physical)]
            self._units = len(idx)
        self.model.train()
        if self.method is not None:
            self.method.before_step(self.model, step=t)
        loss_sum, n_tok, bad = 0.0, 0, 0.0
        for micro, groups in micros:
            batch = self.data.collate(micro, self.device)
            with autocast(self.device):
                losses = per_example_loss(self._forward_module(), batch, task=self.task)
            if not bool(torch.isfinite(losses).all()):
                bad = float(losses.detach().sum())
                if self.dist.world == 1:
                    self._nonfinite_loss(bad, t)
                break  # other ranks learn of it from the all-reduce below and stop with this one
            if self.engine is not None:
                if groups is None:
                    self.engine.accumulate(losses)
                else:
                    self.engine.accumulate(losses, torch.from_numpy(groups).to(losses.device))
            else:
                (losses.sum() / len(idx)).backward()
            loss_sum += float(losses.detach().sum())
            n_tok += int(batch["attention_mask"].sum())
        stats = None
        if self.engine is not None:
            sums, stats = self.engine.take_sum()
            if not self.state.guard_checked:  # for the first-step guard: the sum itself, before noise
                self._sum_norm = math.sqrt(sum(float(s.float().pow(2).sum()) for s in sums))
            plan = self.privacy.plan
            if self.dist.main:  # the noise enters once: on rank 0's share, before the all-reduce
                self.randomness.add_noise_(sums, plan.noise_multiplier * plan.max_grad_norm, draw=draw)
            self.dist.all_reduce(sums)
            expected = self.sampler.expected_batch_size
            for p, s in zip(self.params, sums):
                p.grad = s.div_(expected)
        elif self.dist.world > 1:
            self.dist.all_reduce([self._grad(p) for p in self.params])
        if self.dist.world > 1:
            loss_sum, n_tok, bad, stats = self._reduce_scalars(loss_sum, n_tok, bad, stats)
            if bad:
                self._nonfinite_loss(bad, t)
        if self.method is not None:
            self.method.before_update(self.model)
        grad_sq = sum(float(p.grad.float().pow(2).sum()) for p in self.updated if p.grad is not None)
        if not math.isfinite(grad_sq):
            raise TrainingError(f"`gradient` must be finite. Found a non-finite gradient norm at step {t}. "
                                "The last good checkpoint is kept: resume with a lower rate, `privtune train "
                                "--resume RUN --lr LR`.")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = loss_sum / len(idx) if len(idx) else None
        return loss, stats, n_tok, len(idx)

    @staticmethod
    def _nonfinite_loss(value: float, t: int) -> None:
        raise TrainingError(f"`loss` must be finite. Found {value!r} at step {t}. The last good checkpoint is kept: "
                            "resume with a lower rate, `privtune train --resume RUN --lr LR` (or check the data).")

    @staticmethod
    def _grad(p: nn.Parameter) -> torch.Tensor:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return p.grad

    def _reduce_scalars(self, loss_sum: float, n_tok: int, bad: float,
                        stats: ClipStats | None) -> tuple[float, int, float, ClipStats | None]:
        """Sum the step's figures over ranks (clip statistics: counts and sums added, maxima maximised)."""
        st = stats or ClipStats()
        sums = torch.tensor([loss_sum, n_tok, float(bad != 0), st.n, st.n_clipped, st.norm_sum], dtype=torch.float64)
        maxima = torch.tensor([st.norm_max, st.clipped_norm_max], dtype=torch.float64)
        self.dist.all_reduce([sums])
        self.dist.all_reduce([maxima], op="max")
        if stats is not None:
            stats = ClipStats(n=int(sums[3]), n_clipped=int(sums[4]), norm_sum=float(sums[5]),
                              norm_max=float(maxima[0]), clipped_norm_max=float(maxima[1]))
        bad = bad or (float("nan") if sums[2] else 0.0)  # another rank's loss was not finite
        return float(sums[0]), int(sums[1]), bad, stats

    # -- guards ---------------------------------------------------------------------------------------------------
    def _check_wiring(self) -> None:
        """The optimizer must update exactly the method's tensors (by default the model's trainable parameters, not
        stale copies)."""
        model_ids = {id(p) for p in unique_trainable(self.model)}
        opt_ids = {id(p) for p in self.updated}
        expected_ids = ({id(p) for p in self.method.optimizer_params(self.model)} if self.method is not None
                        else model_ids)
        if self.engine is not None and {id(p) for p in self.engine.params} != model_ids:
            raise TrainingError("the DP engine must be attached to the model being trained. Found it bound to other "
                                "parameters (stale hooks). Apply LoRA first, then attach the engine, then build the "
                                "optimizer.")
        if opt_ids != expected_ids:
            raise TrainingError(f"the optimizer must update the model's {len(expected_ids)} trainable tensors. Found "
                                f"it holding {len(opt_ids)} tensors of which {len(opt_ids & expected_ids)} are the "
                                "model's (built before the model was wrapped?). Build the optimizer last.")

    def _check_first_step(self, before: list[torch.Tensor], stats: ClipStats | None, batch_size: int) -> None:
        """After the first optimizer step: trainable parameters moved; DP: every example got a clipped gradient."""
        moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, self.updated))
        if not moved:
            raise TrainingError("trainable parameters must change after the first optimizer step. Found them "
                                "unchanged: the update does not reach the model (optimizer or DP hooks bound to "
                                "stale parameters).")
        if stats is not None:
            C = self.privacy.plan.max_grad_norm
            if stats.n != batch_size:
                unit = "users" if self.user_level else "examples"
                raise TrainingError(f"per-example gradients must be produced for every example of the batch. "
                                    f"Found {stats.n} clipped units for {batch_size} {unit}: the DP hooks do not "
                                    "see the model being trained.")
            # ||sum_i clip_C(g_i)|| <= n C, measured on the engine's sum itself (not on its own statistics)
            if self._sum_norm > stats.n * C * (1 + 1e-3):
                raise TrainingError(fmt("clipped gradient sum", f"of norm <= examples x max_grad_norm = {stats.n} "
                                        f"x {C}", float(f"{self._sum_norm:.4g}"),
                                        "The DP engine did not clip every example: use a built-in --dp-engine."))

    # -- loop -----------------------------------------------------------------------------------------------------
    def run(self) -> TrainOutcome:
        self._check_wiring()
        st = self.state
        status = "completed"
        last_eps = time.monotonic()
        task = self.progress.add_task("train", total=self.planned_steps, completed=st.step, loss="-", eps="-") \
            if self.progress is not None else None
        while st.step < self.planned_steps:
            t = st.step + 1
            check = not st.guard_checked
            before = [p.detach().clone() for p in self.updated] if check else []
            t0 = time.perf_counter()
            try:
                loss, stats, n_tok, n_ex = self.step(t)
            except BudgetExhausted:
                status = "budget_exhausted"
                break
            if check and n_ex > 0:
                self._check_first_step(before, stats, self._units)
                st.guard_checked = True
            st.train_time_s += time.perf_counter() - t0
            st.step = t
            st.tokens += n_tok
            st.examples += n_ex
            st.empty_batches += int(n_ex == 0)
            if stats is not None:
                st.clip_n += stats.n
                st.clip_clipped += stats.n_clipped
            st.loss_curve.append([t, None if loss is None else round(loss, 6)])
            if task is not None:
                self.progress.update(task, completed=t, loss=self.format_loss(loss))
            if self.on_step is not None:
                self.on_step(st)
            if self.on_checkpoint is not None and self.checkpoint_every and (t % self.checkpoint_every == 0
                                                                             or t == self.planned_steps):
                self.on_checkpoint(st)
            if task is not None and self.privacy is not None and (time.monotonic() - last_eps > EPS_DISPLAY_S
                                                                  or t == self.planned_steps):
                eps = self.privacy.epsilon()  # from the ledger (the accountant takes up to ~1 s)
                self.progress.update(task, eps=f"{certified(eps):.2f}" if eps is not None else "-")
                last_eps = time.monotonic()
        return TrainOutcome(status=status, state=st)


def snapshot_losses(curve: list[list[float | None]], k: int = 10) -> float | None:
    """Mean of the last ``k`` recorded step losses (the 'final train loss'); None if none."""
    vals = [v for _, v in curve[-k:] if v is not None]
    return float(np.mean(vals)) if vals else None
