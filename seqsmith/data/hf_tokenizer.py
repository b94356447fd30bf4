"""A Hugging Face tokenizer behind seqsmith's Tokenizer methods, for pretrained models (needs transformers).

It lives with the other tokenizers so that data preparation never imports a model; ``import_transformers``
is here, the lowest room that needs transformers, for the models' adapter and export to share.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from seqsmith.data.tokenizer import FORMAT_VERSION, Tokenizer, Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text

INSTALL_HINT = "pip install 'seqsmith[hf]'"
SAVED = "hf"  # subdirectory for HF's own files in seqsmith's tokenizer and model directories


def import_transformers() -> Any:
    """The ``transformers`` module, or a SeqsmithError saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise SeqsmithError(f"pretrained Hugging Face models need transformers: {INSTALL_HINT}") from None
    return transformers


class HFTokenizer(Tokenizer):
    """One side of an HF tokenizer with seqsmith's Tokenizer methods; ids carry no special tokens."""

    kind = "hf"

    def __init__(self, tokenizer: Any, side: str) -> None:
        super().__init__()
        self.tokenizer, self.side = tokenizer, side
        self.unk_id = tokenizer.unk_token_id
        self._affixes: tuple[list[int], list[int]] | None = None

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        field = "text_target" if self.side == "target" else "text"
        return [
            list(ids) for ids in self.tokenizer(**{field: list(texts)}, add_special_tokens=False)["input_ids"]
        ]

    def with_specials(self, ids: list[int]) -> list[int]:
        """The encoder input HF builds around ``ids`` (e.g. ``ids + [eos]`` for Marian and T5)."""
        if hasattr(self.tokenizer, "build_inputs_with_special_tokens"):
            return list(self.tokenizer.build_inputs_with_special_tokens(ids))
        prefix, suffix = self._special_affixes()
        return [*prefix, *ids, *suffix]

    def _special_affixes(self) -> tuple[list[int], list[int]]:
        """What a tokenizers-backed tokenizer's post-processor puts before and after a text's ids: it
        works on its own encodings only, so it is read off one probe text encoded with and without."""
        if self._affixes is None:
            plain = self.encode("a")
            full = list(self.tokenizer("a", add_special_tokens=True)["input_ids"])
            start = next(
                (i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), None
            )
            if not plain or start is None:
                raise SeqsmithError(
                    f"cannot tell where {type(self.tokenizer).__name__} puts its special tokens; "
                    "give it a template post-processor (ids + [eos])"
                )
            self._affixes = full[:start], full[start + len(plain) :]
        return self._affixes

    def decode(self, ids: Iterable[int], texts: Mapping[int, str] | None = None) -> str:
        """HF decodes whole sequences only: a given text is put between the runs it splits, spaced."""
        texts = texts or {}
        parts: list[str] = []
        run: list[int] = []
        for position, token in enumerate(map(int, ids)):
            if position in texts:
                parts += [str(self.tokenizer.decode(run, skip_special_tokens=True)), texts[position]]
                run = []
            elif token < self.vocab_size:
                run.append(token)
        parts.append(str(self.tokenizer.decode(run, skip_special_tokens=True)))
        return " ".join(part.strip() for part in parts if part.strip())

    def pieces(self, text: str) -> list[str]:
        return [self.piece(i) for i in self.encode(text)]

    def piece(self, token_id: int) -> str:
        return str(self.tokenizer.convert_ids_to_tokens(token_id))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def save(self, directory: Path, name: str) -> str:
        self.tokenizer.save_pretrained(str(directory / name))
        return name


@dataclasses.dataclass
class HFTokenizers(Tokenizers):
    """``AutoTokenizer`` of an HF model directory, used like ``seqsmith.data.tokenizer.Tokenizers``.

    Saved as ``hf/`` (HF's own files) beside a ``tokenizer.json`` of kind ``hf``, so that
    ``Tokenizers.load`` finds it in a prepared data or model directory like any other tokenizer.
    """

    source: HFTokenizer
    target: HFTokenizer
    joint: bool = True

    @classmethod
    def load(cls, directory: Path) -> HFTokenizers:
        """From an HF model directory, or from one this class saved."""
        directory = Path(directory)
        if (directory / SAVED).is_dir():
            directory = directory / SAVED
        transformers = import_transformers()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SeqsmithError(
                f"{directory}: no Hugging Face tokenizer could be loaded ({str(error)[:300]}); "
                "save one there with tokenizer.save_pretrained(directory)"
            ) from None
        return cls(HFTokenizer(tokenizer, "source"), HFTokenizer(tokenizer, "target"))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.source.save(directory, SAVED)
        description = {
            "format_version": FORMAT_VERSION,
            "kind": "hf",
            "joint": True,
            "lowercase": False,
            "source": SAVED,
            "target": SAVED,
            "source_vocab_size": self.source.vocab_size,
            "target_vocab_size": self.target.vocab_size,
        }
        atomic_write_text(directory / "tokenizer.json", json.dumps(description, indent=2) + "\n")

    def finish_source(self, ids: list[int]) -> list[int]:
        return self.source.with_specials(ids)
