"""Readers of grounded data: inputs of several named fields (``seqsmith.data.fields``).

- CMU Document Grounded Conversations (Zhou et al. 2018): a split is a directory of conversations, one
  JSON file each; the articles are ``data.documents`` (WikiData). A speaker's consecutive messages make
  one turn; each turn of a speaker who saw the document becomes an example: fields ``history`` (up to
  ``data.history`` turns before it, joined by ``<sep>``) and ``document`` (the article section on screen
  at that turn: section 0, the film's facts, as ``key: value`` sentences; 1-3, scene texts), the turn as
  the target, as in the data set's paper.
- WebNLG (Gardent et al. 2017): a split is a directory of XML files; each entry's ``modifiedtripleset``
  becomes the field ``triples`` (``kind: triples``: ``seqsmith.data.fields.linearized``), and each
  ``lex`` text a reference. Training reads one example per text; dev and test one per entry with all its
  texts as references.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from seqsmith.config import FieldConfig
from seqsmith.data.fields import field_texts, joined
from seqsmith.errors import SeqsmithError
from seqsmith.specials import SEP


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SeqsmithError(f"{path}: not valid UTF-8 JSON ({str(error).splitlines()[0]})") from None


def _section_text(section: Any) -> str:
    """An article section as text: a scene is a string; the facts section, ``key: value.`` sentences."""
    if isinstance(section, str):
        return section
    if not isinstance(section, dict):
        return str(section)
    parts = []
    for key, value in section.items():
        if isinstance(value, list):
            value = "; ".join(map(str, value))
        parts.append(f"{key.replace('_', ' ')}: {str(value).strip()}.")
    return " ".join(parts)


def read_documents(directory: Path) -> dict[int, list[str]]:
    """The articles of CMU_DoG by ``wikiDocumentIdx``: the text of each of their sections."""
    if not directory.is_dir():
        raise SeqsmithError(
            f"data.documents: directory {directory} not found; point it at CMU_DoG's WikiData"
        )
    articles = {}
    for path in sorted(directory.glob("*.json")):
        article = _json(path)
        try:
            sections = sorted((int(k), v) for k, v in article.items() if k.isdigit())
            articles[int(article["wikiDocumentIdx"])] = [_section_text(v) for _, v in sections]
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise SeqsmithError(
                f"{path}: not a CMU_DoG article (sections 0-3 and wikiDocumentIdx: {error!r})"
            ) from None
        if not sections:
            raise SeqsmithError(f"{path}: a CMU_DoG article without sections (keys 0, 1, 2, 3)")
    if not articles:
        raise SeqsmithError(f"data.documents: no article (*.json) in {directory}")
    return articles


def _turns(history: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(speaker, text, section) a turn: a speaker's consecutive non-empty messages joined."""
    turns: list[tuple[str, str, int]] = []
    for message in history:
        text = str(message.get("text", "")).strip()
        if not text:
            continue
        if turns and turns[-1][0] == message["uid"]:
            speaker, before, section = turns[-1]
            turns[-1] = (speaker, f"{before} {text}", section)
        else:
            turns.append((message["uid"], text, int(message.get("docIdx", 0))))
    return turns


def deranged(keys: Sequence[int], seed: int) -> dict[int, int]:
    """Each key mapped to another one (a seeded random derangement: no key keeps its own)."""
    rng = random.Random(seed)
    order = sorted(keys)
    while True:
        shuffled = order[:]
        rng.shuffle(shuffled)
        if all(a != b for a, b in zip(order, shuffled)):
            return dict(zip(order, shuffled))


def read_cmu_dog(
    directory: Path,
    documents: Path,
    history: int,
    fields: Sequence[FieldConfig],
    shuffle_seed: int | None = None,
) -> Iterator[tuple[str, str, list[str]]]:
    """(source, target, references) of every grounded turn of the conversations in ``directory``; with
    ``shuffle_seed``, each conversation reads the article of another film (``deranged``)."""
    articles = read_documents(documents)
    if shuffle_seed is not None:
        if len(articles) < 2:
            raise SeqsmithError(f"data.shuffle_documents needs two articles or more in {documents}")
        other = deranged(list(articles), shuffle_seed)
        articles = {key: articles[other[key]] for key in articles}
    paths = sorted(directory.glob("*.json"))
    if not paths:
        raise SeqsmithError(
            f"{directory}: no conversation (*.json); a cmu_dog split is a Conversations/ directory"
        )
    for path in paths:
        conversation = _json(path)
        if not isinstance(conversation, dict):
            raise SeqsmithError(f"{path}: not a CMU_DoG conversation (a JSON object with history)")
        article = articles.get(conversation.get("wikiDocumentIdx", -1))
        if article is None:
            raise SeqsmithError(
                f"{path}: wikiDocumentIdx {conversation.get('wikiDocumentIdx')} is no article of {documents}"
            )
        try:
            saw = set(conversation.get("whoSawDoc", []))
            turns = _turns(conversation.get("history", []))
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise SeqsmithError(
                f"{path}: not a CMU_DoG conversation (history needs uid, text and docIdx: {error!r})"
            ) from None
        for i in range(1, len(turns)):
            speaker, response, section = turns[i]
            if speaker not in saw:
                continue
            context = f" {SEP} ".join(text for _, text, _ in turns[max(0, i - history) : i])
            row = {"history": context, "document": article[min(section, len(article) - 1)]}
            source = joined(field_texts(row, fields, f"{path}: turn {i + 1}"), fields)
            yield source, response, [response]


def read_webnlg(
    directory: Path, fields: Sequence[FieldConfig], each_text: bool, categories: Sequence[str] = ()
) -> Iterator[tuple[str, str, list[str]]]:
    """(source, target, references) of every entry of the XML files under ``directory`` (of
    ``categories`` only, if given): one a text with ``each_text`` (training), else one an entry with
    every text as a reference."""
    paths = sorted(directory.rglob("*.xml"))
    if not paths:
        raise SeqsmithError(f"{directory}: no WebNLG file (*.xml); a webnlg split is e.g. webnlg/train")
    for path in paths:
        try:
            root = ElementTree.parse(path).getroot()
        except ElementTree.ParseError as error:
            raise SeqsmithError(f"{path}: not valid XML ({error})") from None
        for entry in root.iter("entry"):
            if categories and entry.get("category") not in categories:
                continue
            where = f"{path}: entry {entry.get('eid')}"
            triples = [t.text or "" for t in entry.iter("mtriple")]
            texts = [(lex.findtext("text") or lex.text or "").strip() for lex in entry.iter("lex")]
            texts = [text for text in texts if text]
            if not triples or not texts:
                continue
            source = joined(field_texts({"triples": triples}, fields, where), fields)
            if each_text:
                yield from ((source, text, [text]) for text in texts)
            else:
                yield source, texts[0], texts
