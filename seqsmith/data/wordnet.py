"""Synonyms from the Princeton WordNet database files that the Debian package ``wordnet-base`` installs.

Nothing is downloaded: the files are read from ``/usr/share/wordnet`` (or ``$WORDNET_DIR``). Two words are
synonyms when they share a synset; an inflected word finds the synsets of its base form through the
exception lists (``noun.exc``: "mice" -> "mouse") and WordNet's suffix rules ("dogs" -> "dog").
"""

from __future__ import annotations

import os
from collections import defaultdict
from functools import cache
from pathlib import Path

from seqsmith.errors import SeqsmithError

PARTS = ("noun", "verb", "adj", "adv")
# (inflected ending, base ending) per part of speech, tried in order (WordNet's morphy rules)
SUFFIXES = {
    "noun": [
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("ies", "y"),
    ],
    "verb": [
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ],
    "adj": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "adv": [],
}
LANGUAGES = ("en",)


def wordnet_dir() -> Path:
    return Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))


class WordNet:
    """Lower-cased word -> its synonyms (multi-word entries as words joined by spaces)."""

    def __init__(self, directory: Path) -> None:
        self.lemmas: dict[str, dict[str, set[str]]] = {part: defaultdict(set) for part in PARTS}
        self.exceptions: dict[str, dict[str, list[str]]] = {part: {} for part in PARTS}
        for part in PARTS:
            for line in _lines(directory / f"data.{part}"):
                if line.startswith("  "):  # the licence header
                    continue
                fields = line.split(" ", 4)
                count = int(fields[3], 16)
                words = fields[4].split(" ", 2 * count)[: 2 * count : 2]
                members = {_word(w) for w in words}
                for member in members:
                    self.lemmas[part][member.lower()].update(members)
            exceptions = directory / f"{part}.exc"
            if exceptions.is_file():
                for line in _lines(exceptions):
                    inflected, *bases = line.split()
                    self.exceptions[part][inflected] = bases

    def synonyms(self, word: str) -> list[str]:
        """Other words for ``word`` in any of its senses, sorted (the same list on every run)."""
        lower = word.lower()
        found: set[str] = set()
        for part in PARTS:
            for base in self._bases(lower, part):
                found |= self.lemmas[part].get(base, set())
        found.discard(lower)
        return sorted(s for s in found if s.lower() != lower)

    def _bases(self, word: str, part: str) -> list[str]:
        if word in self.lemmas[part]:
            return [word]
        if word in self.exceptions[part]:
            return self.exceptions[part][word]
        for ending, base in SUFFIXES[part]:
            if (
                word.endswith(ending)
                and (stem := word[: len(word) - len(ending)] + base) in self.lemmas[part]
            ):
                return [stem]
        return []


def _word(entry: str) -> str:
    """``physical_entity`` -> "physical entity"; an adjective's marker ``(a)`` is dropped."""
    return entry.split("(", 1)[0].replace("_", " ")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise SeqsmithError(f"WordNet file {path} is unreadable ({error}); reinstall wordnet-base") from None


@cache
def load_wordnet(language: str) -> WordNet:
    """The WordNet of ``language``, read once per process; a clear error when it is not installed."""
    if language not in LANGUAGES:
        raise SeqsmithError(
            f"no WordNet for language {language!r} (wordnet-base has English only, language: en); use a "
            "transform that needs no synonyms (drop, blank, shuffle, swap) for this language"
        )
    directory = wordnet_dir()
    if not (directory / "data.noun").is_file():
        raise SeqsmithError(
            f"WordNet not found in {directory}: the synonym and insert transforms read the Debian package "
            "wordnet-base; install it (apt-get install wordnet-base) or set WORDNET_DIR to its files"
        )
    return WordNet(directory)
