"""BLEU as the WebNLG 2017 challenge computed it, so that a model's row can stand beside the published ones.

    python bench/webnlg_challenge_bleu.py runs/webnlg/model/eval/test \
        runs/webnlg/model/eval/test-webnlg_seen runs/webnlg/model/eval/test-webnlg_unseen

Each argument is a directory that ``seqsmith evaluate`` wrote (its ``sentences.jsonl`` holds every output
with its references). The challenge (Gardent et al., INLG 2017; the organisers' evaluation scripts) scored
with ``multi-bleu.perl -lc`` against the first three references of an entry (an empty line for each one
missing), both sides transliterated to ASCII, split at every non-word character and lowercased. This
script applies that normalisation and scores with sacrebleu (``tokenize="none"``), which counts n-grams
and the brevity penalty (closest reference length) as multi-bleu does. The organisers transliterated with
the ``unidecode`` package; here Unicode decomposition plus a table of the letters it leaves (en dash,
dotless i, o with stroke, sharp s, curly quotes, ...) stands in for it, and the characters that neither
maps are counted and printed (none in the 2017 test set's first three references).
"""

from __future__ import annotations

import argparse
import json
import re
import unicodedata
from pathlib import Path

import sacrebleu

REFERENCES = 3
_UNDECOMPOSED = str.maketrans(
    {
        "\u2013": "-",
        "\u2014": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u0131": "i",
        "\u00f8": "o",
        "\u00d8": "O",
        "\u00df": "ss",
        "\u00e6": "ae",
        "\u00c6": "AE",
        "\u0153": "oe",
        "\u0152": "OE",
        "\u0111": "d",
        "\u0110": "D",
        "\u0142": "l",
        "\u0141": "L",
        "\u00f0": "d",
        "\u00fe": "th",
    }
)


def ascii_text(text: str) -> tuple[str, int]:
    """``text`` in ASCII the way unidecode writes Latin script, and how many characters had no ASCII form."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_UNDECOMPOSED))
    kept = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    ascii_only = kept.encode("ascii", "ignore").decode("ascii")
    return ascii_only, len(kept) - len(ascii_only)


def challenge_form(text: str) -> tuple[str, int]:
    """The challenge's tokens of ``text``: ASCII, every non-word character a token, lowercased."""
    plain, dropped = ascii_text(text)
    return " ".join(" ".join(re.split(r"(\W)", plain)).lower().split()), dropped


def challenge_bleu(rows: list[dict]) -> tuple[float, int]:
    """Corpus BLEU of ``rows`` (evaluate's sentences) under the challenge's rules; and the characters lost."""
    lost, hypotheses = 0, []
    streams: list[list[str]] = [[] for _ in range(REFERENCES)]
    for row in rows:
        hypothesis, dropped = challenge_form(row["hypothesis"])
        hypotheses.append(hypothesis)
        lost += dropped
        references = row["references"][:REFERENCES]
        for k in range(REFERENCES):
            reference, dropped = challenge_form(references[k]) if k < len(references) else ("", 0)
            streams[k].append(reference)
            lost += dropped
    return sacrebleu.corpus_bleu(hypotheses, streams, tokenize="none", force=True).score, lost


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("evaluations", type=Path, nargs="+", help="directories seqsmith evaluate wrote")
    args = parser.parse_args()
    print("| outputs | entries | BLEU (lowercased, ASCII, split at non-word characters, 3 references) |")
    print("|---|---:|---:|")
    for directory in args.evaluations:
        path = directory / "sentences.jsonl"
        if not path.is_file():
            raise SystemExit(f"{path} not found: run `seqsmith evaluate MODEL_DIR [--data DIR]` first")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        score, lost = challenge_bleu(rows)
        note = f" ({lost} characters without an ASCII form dropped)" if lost else ""
        print(f"| {directory} | {len(rows)} | {score:.2f}{note} |")


if __name__ == "__main__":
    main()
