"""Named input fields (``data.fields``): a source made of several texts, such as a dialogue's history and
the document it is about, or knowledge-graph facts and a context.

One mechanism carries them everywhere: the source text is each field's marker token (``<history>``) and
its text, in the configured order, so tokenizers, binarized splits, token budgets, search, export and the
server all see one sequence; ``cut_fields`` then holds each field to its own length on the ids, in
binarization and in generation alike (``seqsmith.data.tokenizer.source_input``). Models that treat fields
apart find them by their markers (segment embeddings of the Transformer).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from seqsmith.config import FieldConfig
from seqsmith.errors import SeqsmithError
from seqsmith.specials import TRIPLE_ROLES, field_marker

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def field_texts(
    row: Mapping[str, object], fields: Sequence[FieldConfig], where: str, strict: bool = False
) -> dict[str, str]:
    """The declared fields of one input, checked: each present, a string, not empty if required, free of
    any field's marker; with ``strict`` (inputs to generate), no other key either."""
    if strict and (unknown := sorted(set(row) - {f.name for f in fields})):
        known = ", ".join(f.name for f in fields)
        raise SeqsmithError(f"{where}: field {unknown[0]!r} is not one this model reads ({known})")
    texts = {}
    markers = [field_marker(f.name) for f in fields]
    for config in fields:
        if config.name not in row:
            present = ", ".join(map(str, row)) or "none"
            raise SeqsmithError(
                f"{where}: no field {config.name!r} (has: {present}); every input needs each field of "
                "data.fields"
            )
        text = row[config.name]
        if config.kind == "triples":
            text = linearized(text, f"{where}: field {config.name!r}")
        elif not isinstance(text, str):
            raise SeqsmithError(
                f"{where}: field {config.name!r} is {type(text).__name__}, not a string (a list of facts "
                "needs kind: triples)"
            )
        if config.required and not text.strip():
            raise SeqsmithError(
                f"{where}: field {config.name!r} is empty; give it text, or set required: false in "
                "data.fields"
            )
        if found := [m for m in markers if m in text]:
            raise SeqsmithError(
                f"{where}: field {config.name!r} holds {found[0]!r}, the marker of a field; remove it "
                "from the text"
            )
        texts[config.name] = text
    return texts


def _words(part: str) -> str:
    """A triple's part as words: underscores and camelCase split, quotes dropped (names can be copied)."""
    return " ".join(_CAMEL.sub(" ", part.strip().strip('"').replace("_", " ")).split())


def linearized(facts: object, where: str) -> str:
    """Knowledge-graph facts, a list of ``subject | predicate | object`` strings or [s, p, o] lists, as
    ``<S> subject <P> predicate <O> object ...`` (a predicate's camelCase as lowercase words)."""
    if not isinstance(facts, list):
        raise SeqsmithError(
            f"{where}: is {type(facts).__name__}; give a list of 'subject | predicate | object'"
        )
    parts = []
    for fact in facts:
        pieces = fact.split(" | ") if isinstance(fact, str) else fact
        if not isinstance(pieces, list) or len(pieces) != 3 or not all(isinstance(p, str) for p in pieces):
            raise SeqsmithError(f"{where}: fact {fact!r} is not 'subject | predicate | object' nor [s, p, o]")
        subject, predicate, obj = (_words(piece) for piece in pieces)
        parts.append(
            " ".join(
                f"{role} {words}" for role, words in zip(TRIPLE_ROLES, (subject, predicate.lower(), obj))
            )
        )
    return " ".join(parts)


def joined(texts: Mapping[str, str], fields: Sequence[FieldConfig]) -> str:
    """The one source text of several fields: each field's marker, then its text."""
    return " ".join(f"{field_marker(f.name)} {texts[f.name].strip()}".rstrip() for f in fields)


def cut_fields(ids: list[int], markers: Mapping[int, FieldConfig], before: Collection[int] = ()) -> list[int]:
    """Each field's tokens (those after its marker's id) cut to its ``max_length`` from its
    ``truncate_from`` side; what comes before the first marker (a corpus tag) is kept. An id of ``before``
    right before a marker (SentencePiece's bare word-start piece, which the space before a marker
    becomes) is dropped, so that a field holds its own text's tokens only."""
    out: list[int] = []
    run: list[int] = []
    current: FieldConfig | None = None
    for token in [*ids, -1]:  # -1: the end, which closes the last field
        if token not in markers and token != -1:
            run.append(token)
            continue
        if token != -1 and run and run[-1] in before:
            run.pop()
        if current is not None and current.max_length is not None and len(run) > current.max_length:
            keep = current.max_length
            run = run[len(run) - keep :] if current.truncate_from == "left" else run[:keep]
        out += run
        run, current = [], markers.get(token)
        if token != -1:
            out.append(token)
    return out
