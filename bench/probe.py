"""Run a toolkit's training command in this process and time every optimizer step the same way for all.

    python bench/probe.py OUT.json TOOLKIT MODULE [ARGS...]     # e.g. OUT.json joeynmt joeynmt train c.yaml

Runs under any peer's python (it needs only torch), so the count cannot differ between toolkits: a global
optimizer post-step hook stamps the wall clock after each update, and a thin wrapper around the toolkit's
own batch hand-off adds up the batch's non-pad target tokens including EOS (never BOS). At exit it writes
``{"step_end": [...], "step_tokens": [...]}``; ``train_throughput.py`` turns that into tokens/s.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import time
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

STEP_END: list[float] = []
STEP_TOKENS: list[int] = []
PENDING = [0]  # target tokens of the batches seen since the last update


def _after_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    STEP_END.append(time.perf_counter())
    STEP_TOKENS.append(PENDING[0])
    PENDING[0] = 0


def _count_seqsmith() -> None:
    import seqsmith.training.trainer as trainer

    original = trainer.collate

    def collate(split: Any, indices: Any, *specials: int) -> Any:
        batch = original(split, indices, *specials)
        PENDING[0] += int(batch.tgt_out.ne(0).sum())  # tgt_out = target + EOS, PAD=0
        return batch

    trainer.collate = collate


def _count_joeynmt() -> None:
    from joeynmt.training import TrainManager

    original = TrainManager._train_step

    def train_step(self: Any, batch: Any) -> Any:
        PENDING[0] += int(batch.trg.ne(self.model.pad_index).sum())  # trg = target + EOS
        return original(self, batch)

    TrainManager._train_step = train_step


def _count_opennmt() -> None:
    from onmt.trainer import Trainer

    original = Trainer._gradient_accumulation

    def accumulate(self: Any, batches: list[Any], *args: Any) -> Any:
        for batch in batches:  # tgt = BOS + target + EOS; drop BOS
            PENDING[0] += int(batch["tgt"][:, 1:, 0].ne(self.train_loss.padding_idx).sum())
        return original(self, batches, *args)

    Trainer._gradient_accumulation = accumulate


COUNTERS = {"seqsmith": _count_seqsmith, "joeynmt": _count_joeynmt, "opennmt": _count_opennmt}


def _write(path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"step_end": STEP_END, "step_tokens": STEP_TOKENS}, handle)


def main() -> None:
    out, toolkit, module, *args = sys.argv[1:]
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    COUNTERS[toolkit]()
    register_optimizer_step_post_hook(_after_step)
    atexit.register(_write, out)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
