"""The training loop: MLE with label smoothing, validation, early stopping, checkpoints and exact resume.

Exact resume rests on three things: batches are a pure function of (seed, epoch), the learning rate is a
pure function of the step, and each checkpoint stores the optimizer, the torch RNG and the data position.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from seqsmith.allocator import keep_freed_memory
from seqsmith.config import Config, GenerateConfig, TransformerConfig, save_config
from seqsmith.data.batching import TokenBatchSampler, collate
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.evaluation.metrics import corpus_scores, reference_sets
from seqsmith.fileio import atomic_path
from seqsmith.generation.generator import decode_split
from seqsmith.models.build import describe
from seqsmith.models.hf import HFSeq2Seq, save_architecture
from seqsmith.models.hf_export import init_encoder_from_hf
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.model_dir import CONFIG, TOKENIZER, WEIGHTS, build_from_config, read_config, save_weights
from seqsmith.models.transformer import TransformerModel
from seqsmith.training.checkpoint import CheckpointDir, Progress
from seqsmith.training.losses import cross_entropy, weight_penalty
from seqsmith.training.optim import build_optimizer, learning_rate, set_learning_rate

LOG = "train_log.jsonl"


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    epochs_completed: int
    minutes: float
    stop_reason: str
    best_metric: float | None
    last_validation: dict[str, float] | None


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


@torch.no_grad()
def split_loss(model: Seq2SeqModel, split: BinarizedSplit, batch_tokens: int) -> float:
    """Mean negative log-likelihood per target token (EOS included) of a binarized split."""
    device = next(model.parameters()).device
    sampler = TokenBatchSampler(split.source_lengths, split.target_lengths, batch_tokens, shuffle=False)
    nll, tokens = 0.0, 0
    for indices in sampler.batches(0):
        batch = collate(split, indices, model.pad_id, model.bos_id, model.eos_id).to(device)
        parts = cross_entropy(
            model(batch.src, batch.src_mask, batch.tgt_in), batch.tgt_out, model.pad_id, 0.0
        )
        nll += float(parts.nll)
        tokens += parts.tokens
    return nll / max(tokens, 1)


def perplexity_of(loss: float) -> float:
    return math.exp(min(loss, 50.0))


class Trainer:
    def __init__(self, config: Config, show_progress: bool = True) -> None:
        self.config = config
        self.cfg = config.train
        self.data_dir = Path(config.data.output_dir)
        self.model_dir = Path(self.cfg.model_dir)
        self.show_progress = show_progress
        self.rank, self.world = _distributed()
        self.device = torch.device(
            f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        )
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        if self.device.type == "cpu":
            keep_freed_memory()  # +9% tokens/s on the 2-core machine: steps stop page-faulting
        if not (self.data_dir / "report.json").is_file():
            raise SeqsmithError(f"no prepared data in {self.data_dir}; run `seqsmith prepare CONFIG` first")
        report = json.loads((self.data_dir / "report.json").read_text(encoding="utf-8"))
        prepared, wanted = report.get("oov_slots", 0), getattr(config.model, "oov_slots", 0)
        if prepared != wanted:
            raise SeqsmithError(
                f"{self.data_dir} was prepared with model.oov_slots={prepared}, the config asks for "
                f"{wanted}; run `seqsmith prepare CONFIG` again"
            )
        self.tokenizers = Tokenizers.load(self.data_dir / TOKENIZER)
        self.train_split = BinarizedSplit(self.data_dir, "train")
        self.dev_split = (
            BinarizedSplit(self.data_dir, "dev") if (self.data_dir / "dev.jsonl").is_file() else None
        )
        self.sampler = TokenBatchSampler(
            self.train_split.source_lengths,
            self.train_split.target_lengths,
            self.cfg.batch_tokens,
            shuffle=True,
            seed=self.cfg.seed,
            rank=self.rank,
            world_size=self.world,
        )
        self.higher_is_better = self.cfg.early_stopping_metric == "bleu"
        self.checkpoints = CheckpointDir(self.model_dir, self.cfg.keep_best, self.higher_is_better)
        self._log_file: Any = None

    # ----------------------------------------------------------------- set-up
    def _prepare_model_dir(self) -> None:
        if self.rank:
            return
        self.model_dir.mkdir(parents=True, exist_ok=True)
        if (self.model_dir / CONFIG).is_file():
            previous = read_config(self.model_dir)
            if previous.model != self.config.model:
                raise SeqsmithError(
                    f"{self.model_dir} holds a model with another architecture ({previous.model.arch}, "
                    "different model section); choose another train.model_dir or delete that directory"
                )
        with atomic_path(self.model_dir / CONFIG) as temporary:
            save_config(self.config, temporary)
        if not (self.model_dir / TOKENIZER).is_dir():
            shutil.copytree(self.data_dir / TOKENIZER, self.model_dir / TOKENIZER)

    def initial_model(self) -> Seq2SeqModel:
        """The model before training: fresh, pretrained, or with a pretrained encoder (a resumed run then
        loads its checkpoint over it)."""
        model = build_from_config(self.config, self.tokenizers)
        if isinstance(model, HFSeq2Seq) and self.rank == 0:
            save_architecture(model, self.model_dir)
        source = getattr(self.config.model, "init_encoder_from", None)
        if source is not None:
            assert isinstance(model, TransformerModel) and isinstance(self.config.model, TransformerConfig)
            init_encoder_from_hf(model, source, self.config.model.init_encoder_embeddings)
        return model

    def _open_log(self, resume_step: int) -> None:
        """Keep the log rows up to the resumed step, so a resumed run's log equals an uninterrupted one's."""
        if self.rank:
            return
        path = self.model_dir / LOG
        kept = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line + "\n")
        with atomic_path(path) as temporary:
            temporary.write_text("".join(kept), encoding="utf-8")
        self._log_file = path.open("a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard: Any = SummaryWriter(str(self.model_dir / "tensorboard"))
        except ImportError:
            self._tensorboard = None

    def _log(self, row: dict[str, Any]) -> None:
        if self._log_file is None:
            return
        self._log_file.write(json.dumps(row) + "\n")
        self._log_file.flush()
        if self._tensorboard is not None:
            for key, value in row.items():
                if isinstance(value, float):
                    self._tensorboard.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def _total_steps(self) -> int | None:
        per_epoch = math.ceil(len(self.sampler.batches(0)) / self.cfg.accumulate)
        candidates = [self.cfg.max_steps, self.cfg.max_epochs and self.cfg.max_epochs * per_epoch]
        known = [c for c in candidates if c]
        return min(known) if known else None

    # ----------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self, model: Seq2SeqModel) -> dict[str, float]:
        assert self.dev_split is not None
        model.eval()
        loss = split_loss(model, self.dev_split, self.cfg.batch_tokens)
        result = {"loss": loss, "ppl": perplexity_of(loss)}
        if self.cfg.validation_bleu:
            greedy = GenerateConfig(method="greedy", batch_tokens=self.config.generate.batch_tokens)
            hypotheses = decode_split(model, self.dev_split, self.tokenizers, greedy)
            references = [json.loads(line)["references"] for line in self._dev_rows()]
            evaluate = self.config.evaluate
            scores = corpus_scores(
                [h[0] for h in hypotheses],
                reference_sets(references),
                ["bleu"],
                evaluate.bleu_tokenize,
                evaluate.lowercase,
            )
            result["bleu"] = scores["bleu"]["score"]
        model.train()
        return result

    def _dev_rows(self) -> list[str]:
        return (self.data_dir / "dev.jsonl").read_text(encoding="utf-8").splitlines()

    def _metric(self, validation: dict[str, float]) -> float:
        return validation[self.cfg.early_stopping_metric if self.cfg.validation_bleu else "loss"]

    # ----------------------------------------------------------------- the loop
    def train(self) -> TrainResult:
        torch.manual_seed(self.cfg.seed)
        self._prepare_model_dir()
        model = self.initial_model().to(self.device)
        optimizer = build_optimizer(model.parameters(), self.cfg)
        progress = self.checkpoints.restore(model, optimizer) or Progress()
        if self.rank == 0:
            start = f"resuming at step {progress.step}" if progress.step else "starting"
            tqdm.write(f"seqsmith: {describe(model)}; {start}; model directory {self.model_dir}")
        self._open_log(progress.step)
        wrapped = DistributedDataParallel(model) if self.world > 1 else model
        model.train()
        total_steps = self._total_steps()
        d_model = getattr(self.config.model, "d_model", 512)
        started = time.monotonic() - progress.elapsed
        bar = tqdm(
            total=total_steps,
            initial=progress.step,
            disable=not self.show_progress or self.rank > 0,
            unit="step",
            dynamic_ncols=True,
        )
        window_tokens, window_start, window_loss, window_count = 0, time.monotonic(), 0.0, 0
        last_validation: dict[str, float] | None = None
        stop_reason = ""
        try:
            while not stop_reason:
                batches = self.sampler.batches(progress.epoch)
                while progress.batch < len(batches) and not stop_reason:
                    group = batches[progress.batch : progress.batch + self.cfg.accumulate]
                    lr = learning_rate(self.cfg, progress.step + 1, total_steps, d_model, progress.lr_factor)
                    set_learning_rate(optimizer, lr)
                    loss_per_token, tokens = self._step(wrapped, model, optimizer, group, progress.step + 1)
                    progress.step += 1
                    progress.batch += len(group)
                    window_tokens += tokens
                    window_loss += loss_per_token
                    window_count += 1
                    bar.update(1)
                    if progress.step % self.cfg.log_every == 0 or progress.step == 1:
                        now = time.monotonic()
                        row = {
                            "kind": "train",
                            "step": progress.step,
                            "epoch": progress.epoch,
                            "elapsed": now - started,
                            "lr": lr,
                            "loss": window_loss / window_count,
                            "tokens_per_s": window_tokens * self.world / max(now - window_start, 1e-9),
                        }
                        self._log(row)
                        bar.set_postfix(
                            loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}", tok_s=f"{row['tokens_per_s']:.0f}"
                        )
                        window_tokens, window_start, window_loss, window_count = 0, now, 0.0, 0
                    stop_reason = self._budget_reason(progress, started)
                    validate_now = progress.step % self.cfg.validate_every == 0
                    if validate_now or stop_reason or progress.step % self.cfg.checkpoint_every == 0:
                        last_validation, early = self._checkpoint(
                            model, optimizer, progress, started, validate_now or bool(stop_reason)
                        )
                        stop_reason = stop_reason or early
                    stop_reason = self._agree(stop_reason)
                if progress.batch >= len(batches):
                    progress.epoch += 1
                    progress.batch = 0
                    if self.cfg.max_epochs and progress.epoch >= self.cfg.max_epochs and not stop_reason:
                        stop_reason = f"reached train.max_epochs={self.cfg.max_epochs}"
                        last_validation, _ = self._checkpoint(model, optimizer, progress, started, True)
        except KeyboardInterrupt:
            stop_reason = "interrupted; the last checkpoint is kept, run the same command to resume"
        finally:
            bar.close()
            if self._log_file is not None:
                self._log_file.close()
        minutes = (time.monotonic() - started) / 60
        if self.rank == 0:
            tqdm.write(f"seqsmith: stopped after {progress.step} steps, {minutes:.1f} min: {stop_reason}")
        return TrainResult(
            self.model_dir,
            progress.step,
            progress.epoch,
            minutes,
            stop_reason,
            progress.best_metric,
            last_validation,
        )

    def _step(
        self,
        wrapped: torch.nn.Module,
        model: Seq2SeqModel,
        optimizer: torch.optim.Optimizer,
        group: list[Any],
        step: int,
    ) -> tuple[float, int]:
        specials = model.pad_id, model.bos_id, model.eos_id
        batches = [collate(self.train_split, indices, *specials).to(self.device) for indices in group]
        tokens = sum(b.num_target_tokens for b in batches)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for batch in batches:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
                scores = wrapped(batch.src, batch.src_mask, batch.tgt_in)
            parts = cross_entropy(scores, batch.tgt_out, model.pad_id, self.cfg.label_smoothing)
            auxiliary = model.auxiliary_loss()
            loss = (parts.loss if auxiliary is None else parts.loss + auxiliary) / tokens
            penalty = weight_penalty(model, self.cfg.l1, self.cfg.l2)
            if penalty is not None:
                loss = loss + penalty / len(batches)
            if not torch.isfinite(loss):
                raise SeqsmithError(
                    f"the training loss became {float(loss.detach())} at step {step}; lower train.lr, raise "
                    "train.warmup_steps, set train.clip_grad_norm, or turn off train.bf16"
                )
            loss.backward()
            total += float(parts.nll) / tokens
        if self.cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.clip_grad_norm)
        optimizer.step()
        return total, tokens

    def _agree(self, reason: str) -> str:
        """Every process stops at the same step: rank 0 decides, as it alone validates and keeps the clock."""
        if self.world == 1:
            return reason
        flag = torch.tensor([1 if reason else 0], device=self.device)
        dist.broadcast(flag, src=0)
        if self.rank == 0:
            return reason
        return "stopped together with rank 0" if int(flag) else ""

    def _budget_reason(self, progress: Progress, started: float) -> str:
        if self.cfg.max_steps and progress.step >= self.cfg.max_steps:
            return f"reached train.max_steps={self.cfg.max_steps}"
        if self.cfg.max_minutes and time.monotonic() - started >= self.cfg.max_minutes * 60:
            return f"reached train.max_minutes={self.cfg.max_minutes}"
        return ""

    def _checkpoint(
        self,
        model: Seq2SeqModel,
        optimizer: torch.optim.Optimizer,
        progress: Progress,
        started: float,
        validate: bool,
    ) -> tuple[dict[str, float] | None, str]:
        """Validate (when asked and a dev set exists), save, and say whether to stop early."""
        if self.rank:
            return None, ""
        validation = self.validate(model) if validate and self.dev_split is not None else None
        early = ""
        metric = None
        if validation is not None:
            metric = self._metric(validation)
            self._log(
                {"kind": "valid", "step": progress.step, "elapsed": time.monotonic() - started, **validation}
            )
            tqdm.write(
                f"seqsmith: step {progress.step} dev "
                + ", ".join(f"{k} {v:.3f}" for k, v in validation.items())
            )
            improved = progress.best_metric is None or (
                metric > progress.best_metric if self.higher_is_better else metric < progress.best_metric
            )
            if improved:
                progress.best_metric, progress.bad_validations = metric, 0
                save_weights(model, self.model_dir / WEIGHTS)
            else:
                progress.bad_validations += 1
                if (
                    self.cfg.schedule == "plateau"
                    and progress.bad_validations % (self.cfg.plateau_patience + 1) == 0
                ):
                    progress.lr_factor *= self.cfg.plateau_factor
                if self.cfg.patience and progress.bad_validations >= self.cfg.patience:
                    metric_name = self.cfg.early_stopping_metric
                    early = f"early stopping: no dev {metric_name} gain in {self.cfg.patience} validations"
        elif self.dev_split is None or not (self.model_dir / WEIGHTS).is_file():
            save_weights(model, self.model_dir / WEIGHTS)
        progress.elapsed = time.monotonic() - started
        self.checkpoints.save(model, optimizer, progress, metric)
        return validation, early


def train(config: Config, show_progress: bool = True) -> TrainResult:
    return Trainer(config, show_progress).train()
