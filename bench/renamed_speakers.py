"""Do summaries spell the names a dialogue uses? DialogSum with its speakers renamed to real first names.

DialogSum writes speakers as ``#Person1#``, ``#Person2#``; chat logs from elsewhere use real names, many of
which a vocabulary trained on DialogSum has never seen whole (and some with letters it has never seen at
all). ``rename`` rewrites a DialogSum split, dialogue and reference summaries alike, with names drawn per
dialogue from NAMES (seeded, so the file is the same on every run). ``measure`` summarizes it with each
model directory and counts, per model:

- ``unk_emitted``: outputs in which the model produced the unknown id (what replace_unk then repairs);
- ``unk_shown``: outputs whose text holds ``<unk>`` (decode never writes it, so this must be 0);
- ``names_exact``: of the outputs that mention a name at all, the share in which every mention is spelled
  as in the dialogue (a mention: a capitalized word within edit similarity 0.7 of a dialogue name, or
  sharing its first three letters);
- ``names_mentioned``: outputs with at least one exact name; ``placeholder``: outputs still saying
  ``#Person``; ROUGE-1/2/L against the renamed references.

    python bench/renamed_speakers.py rename ../shared/data/dialogsum/test.jsonl -o runs/renamed_test.jsonl
    python bench/renamed_speakers.py rename ../shared/data/dialogsum/train.jsonl --share 0.5 --made-up \
        -o runs/renamed_train.jsonl   # training data in which half the dialogues name their speakers
    python bench/renamed_speakers.py measure runs/renamed_test.jsonl MODEL_DIR [...] [--set whole_words=true]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import yaml

from seqsmith.evaluation.metrics import corpus_scores, reference_sets
from seqsmith.generation.generator import Generator

NAMES = [
    "Amanda", "Oliver", "Siobhan", "Mateusz", "Ngozi", "Bartholomew", "Xiomara", "Thandiwe", "Eoin",
    "Radoslaw", "Oluwaseun", "Kazimierz", "Priyanka", "Tobias", "Zoë", "José", "Björn", "Ségolène",
    "Łukasz", "Nguyen", "Ingrid", "Rafael", "Chidera", "Hamish", "Anouk", "Dmitri", "Leilani", "Yusuf",
    "Margarethe", "Quentin", "Saoirse", "Tadeusz", "Wilhelmina", "Aurelio", "Fatoumata", "Gwendolyn",
    "Horatio", "Ifeoma", "Jolanta", "Kofi", "Ludmila", "Mehmet", "Nadia", "Osvaldo", "Parveen", "Rosalind",
    "Sven", "Teodora", "Ulrike", "Valentin", "Wojciech", "Ximena", "Yevgenia", "Zbigniew", "Agnieszka",
    "Benedikt", "Carys", "Dagny", "Emeka", "Florentyna",
]  # fmt: skip
PLACEHOLDER = re.compile(r"#Person(\d+)#")
WORD = re.compile(r"[^\W\d_][\w'’-]*")


ONSETS = ["b", "d", "k", "l", "m", "n", "r", "s", "t", "v", "z", "sh", "th", "ch", "gr", "br", "kl", "ł", "ñ"]
VOWELS = ["a", "e", "i", "o", "u", "y", "é", "ø", "ü", "ai", "ou"]


def pseudo_name(rng: random.Random) -> str:
    """A made-up name of 2-3 syllables, some letters outside English: never one of NAMES."""
    while True:
        name = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3)))
        name = name[0].upper() + name[1:] + rng.choice(["", "n", "r", "s", "k"])
        if name not in NAMES:
            return name


def rename(
    rows: list[dict[str, str]], seed: int = 0, share: float = 1.0, made_up: bool = False
) -> list[dict[str, str]]:
    """``share`` of the dialogues with their speakers renamed: from NAMES, or made up (``made_up``, for
    training data, so that a test set renamed from NAMES holds names the model has never seen)."""
    rng = random.Random(seed)
    renamed = []
    for row in rows:
        speakers = sorted(set(PLACEHOLDER.findall(row["dialogue"])), key=int)
        if rng.random() >= share:
            renamed.append({**row, "names": []})
            continue
        chosen = [pseudo_name(rng) for _ in speakers] if made_up else rng.sample(NAMES, len(speakers))
        names = dict(zip(speakers, chosen, strict=True))

        def named(match: re.Match[str], names: dict[str, str] = names) -> str:
            return names.get(match.group(1), match.group(0))

        texts = {key: PLACEHOLDER.sub(named, value) for key, value in row.items() if isinstance(value, str)}
        renamed.append({**texts, "names": [names[s] for s in speakers]})
    return renamed


def mentions(summary: str, names: list[str]) -> list[tuple[str, bool]]:
    """(word, spelled exactly) for each word of ``summary`` that refers to one of ``names``."""
    found = []
    for word in WORD.findall(summary):
        bare = re.sub(r"['’]s$", "", word)
        if not bare[:1].isupper():
            continue
        for name in names:
            close = SequenceMatcher(None, bare.lower(), name.lower()).ratio() >= 0.7
            if bare == name or close or (len(bare) >= 3 and bare[:3] == name[:3]):
                found.append((bare, bare in names))
                break
    return found


def measure(
    path: Path, model_dirs: list[str], limit: int | None = None, options: dict[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[:limit]
    references = [[row[k] for k in ("summary1", "summary2", "summary3") if k in row] for row in rows]
    results = {}
    for model_dir in model_dirs:
        generator = Generator.from_pretrained(model_dir, **(options or {}))
        unk = generator.tokenizers.target.unk_id
        outputs = [nbest[0] for nbest in generator.generate_full([row["dialogue"] for row in rows])]
        texts = [output.text for output in outputs]
        found = [mentions(text, row["names"]) for text, row in zip(texts, rows, strict=True)]
        mentioning = [f for f in found if f]
        rouge = corpus_scores(texts, reference_sets(references), ["rouge1", "rouge2", "rougeL"])
        scores = {name: value["score"] for name, value in rouge.items()}
        results[model_dir] = {
            "outputs": len(texts),
            "unk_emitted": sum(unk in output.tokens for output in outputs) / len(texts),
            "unk_shown": sum("<unk>" in text for text in texts) / len(texts),
            "names_exact": sum(all(ok for _, ok in f) for f in mentioning) / max(len(mentioning), 1),
            "names_mentioned": sum(any(ok for _, ok in f) for f in found) / len(texts),
            "placeholder": sum("#Person" in text for text in texts) / len(texts),
            "misspelled": sorted({word for f in found for word, ok in f if not ok})[:30],  # type: ignore[dict-item]
            **{key: round(value, 2) for key, value in scores.items()},
        }
        print(json.dumps({model_dir: results[model_dir], "options": options}, ensure_ascii=False), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    renaming = commands.add_parser("rename")
    renaming.add_argument("jsonl", type=Path)
    renaming.add_argument("-o", "--output", type=Path, required=True)
    renaming.add_argument("--share", type=float, default=1.0, help="rename this share of the dialogues")
    renaming.add_argument("--made-up", action="store_true", help="made-up names (for training data)")
    renaming.add_argument("--seed", type=int, default=0)
    measuring = commands.add_parser("measure")
    measuring.add_argument("jsonl", type=Path)
    measuring.add_argument("model_dirs", nargs="+")
    measuring.add_argument("--limit", type=int, help="the first N dialogues only (a quick look)")
    measuring.add_argument("--set", nargs="*", default=[], help="generation options, e.g. whole_words=true")
    args = parser.parse_args()
    if args.command == "rename":
        rows = [json.loads(line) for line in args.jsonl.read_text(encoding="utf-8").splitlines() if line]
        renamed = rename(rows, args.seed, args.share, args.made_up)
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in renamed)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"{args.output}: {len(rows)} dialogues renamed", file=sys.stderr)
    else:
        options = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
        measure(args.jsonl, args.model_dirs, args.limit, options)


if __name__ == "__main__":
    main()
