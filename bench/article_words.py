"""How often a grounded model's outputs name something from their article (docs/results.md, CMU_DoG).

    python bench/article_words.py runs/cmu_dog_concat/data/test.jsonl \
        runs/cmu_dog_copy/model/eval/test/hypotheses.txt

For each output (one a line, in the order of the prepared split's sources): does it use a word of four or
more letters that the source's article field (behind ``<document>``) holds and its history does not,
leaving out the generic words of film talk? Prints the count and share per outputs file. Checking the same
outputs against another prepared split (the shuffled articles) gives the rate expected by chance.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

GENERIC = {"movie", "film", "think", "good", "great"}


def words(text: str) -> set[str]:
    return {word.lower() for word in re.findall(r"[A-Za-z]{4,}", text)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("split", type=Path, help="a prepared split (.jsonl) with the sources")
    parser.add_argument("outputs", type=Path, nargs="+", help="hypotheses.txt files of that split")
    args = parser.parse_args()
    sources = [json.loads(line)["source"] for line in args.split.read_text(encoding="utf-8").splitlines()]
    for path in args.outputs:
        outputs = path.read_text(encoding="utf-8").splitlines()
        if len(outputs) != len(sources):
            raise SystemExit(f"article_words: {path} has {len(outputs)} lines, {args.split} {len(sources)}")
        hits = 0
        for source, output in zip(sources, outputs, strict=True):
            history, _, article = source.partition("<document>")
            hits += bool(words(output) & (words(article) - words(history) - GENERIC))
        print(f"{path}: {hits} of {len(outputs)} ({100 * hits / len(outputs):.1f}%)")


if __name__ == "__main__":
    main()
