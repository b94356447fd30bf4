"""Run by data_memory.py with JoeyNMT's python: JoeyNMT loads a corpus, then iterates one epoch of batches.

    <joeynmt venv>/bin/python bench/joeynmt_data_child.py PREFIX SRC_SUFFIX TRG_SUFFIX BATCH_TOKENS

JoeyNMT has no separate preparation step: its `load_data` reads, tokenizes (here: characters, as seqsmith's
couplet config) and keeps every example in memory, so the one process's peak is what a JoeyNMT user pays.
Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

from joeynmt.config import _check_special_symbols
from joeynmt.data import load_data


def main(prefix: str, source: str, target: str, batch_tokens: str) -> None:
    side = {"level": "char", "lowercase": False, "max_length": 100, "voc_min_freq": 1}
    cfg = {
        "train": prefix,
        "dataset_type": "plain",
        "special_symbols": SimpleNamespace(**_check_special_symbols({})),
        "src": {"lang": source, **side},
        "trg": {"lang": target, **side},
    }
    vocab, _, train, _, _ = load_data(cfg, datasets=["train"])
    batches = examples = 0
    iterator = train.make_iter(
        batch_size=int(batch_tokens), batch_type="token", shuffle=True, seed=1, pad_index=vocab.pad_index
    )
    for batch in iterator:
        batches, examples = batches + 1, examples + batch.nseqs
    print(json.dumps({"examples": examples, "batches": batches, "vocab_size": len(vocab)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
