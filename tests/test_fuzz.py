"""Property-based fuzzing: no input to the readers, the config loader, generation options or the server's
request model raises anything but seqsmith's own error (or, for the request model, pydantic's 422)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from seqsmith import api
from seqsmith.config import Config, TokenizerConfig, config_from_dict, load_config
from seqsmith.data.corpus import read_dialogue, read_jsonl, read_parallel, read_tsv
from seqsmith.data.tokenizer import CharTokenizer, WordTokenizer
from seqsmith.errors import SeqsmithError
from seqsmith.generation.generator import Generator

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXTY = st.text(alphabet='ab \t\n\r\u2028{}[]":,0x\\é__eou__', max_size=200)
CONTENT = st.one_of(st.binary(max_size=300), TEXTY.map(lambda text: text.encode("utf-8")))


def drain(reader: Any) -> None:
    with contextlib.suppress(SeqsmithError):
        for _ in reader:
            pass


@FUZZ
@given(first=CONTENT, second=CONTENT)
def test_readers_raise_only_their_own_error(tmp_path: Path, first: bytes, second: bytes) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(first)
    two.write_bytes(second)
    drain(read_tsv(one, 0, 1))
    drain(read_jsonl(one, "source", "target", ["summary1"]))
    drain(read_dialogue(one, 3, " <sep> "))
    drain(read_parallel(one, two))


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"source": ' * 50_000, '{"source": "a", "target": NaN}'],
    ids=["deep-list", "deep-object", "nan"],
)
def test_hostile_json_lines(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(text + "\n", encoding="utf-8")
    drain(read_jsonl(path, "source", "target", []))


KEYS = [
    "data",
    "model",
    "train",
    "generate",
    "evaluate",
    "arch",
    "lr",
    "tokenizer",
    "kind",
    "objective",
    "beam_size",
]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(raw=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
def test_config_dicts_raise_only_their_own_error(raw: dict[str, Any]) -> None:
    with contextlib.suppress(SeqsmithError):
        config_from_dict(raw)


LAUGHS = "".join(f"{a}: &{a} [{', '.join([f'*{b}'] * 9)}]\n" for a, b in zip("bcdefghi", "abcdefgh"))


@pytest.mark.parametrize(
    ("text", "override"),
    [
        ("[" * 100_000, "train.lr=3e-4"),
        ("data: " + "{a: " * 5000, "train.lr=3e-4"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\n" + LAUGHS + "data: {train: x, reference_fields: *i}",
            "train.lr=1",
        ),
        ("data: {train: x}", "train.lr=" + "[" * 100_000),
        ("data: {train: x}", "train.lr=[unclosed"),
    ],
    ids=["deep-list", "deep-map", "billion-laughs", "deep-override", "broken-override"],
)
def test_hostile_config_files(tmp_path: Path, text: str, override: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.process_time()  # CPU seconds: bounded work, whatever else shares the machine
    with pytest.raises(SeqsmithError) as error:
        load_config(path, [override])
    assert len(str(error.value)) < 2000 and time.process_time() - started < 10


@FUZZ
@given(text=st.text(max_size=200))
def test_config_files_raise_only_their_own_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(SeqsmithError):
        load_config(path, ["train.lr=3e-4"])


@FUZZ
@given(lines=st.lists(st.text(alphabet="abcé日本\t <>", min_size=1, max_size=30), min_size=1, max_size=20))
def test_symbol_tokenizers_round_trip(lines: list[str]) -> None:
    chars = CharTokenizer.train(lines, TokenizerConfig(kind="char"))
    words = WordTokenizer.train(lines, TokenizerConfig(kind="word"))
    for line in lines:
        assert chars.decode(chars.encode(line)) == line
        assert words.decode(words.encode(line)) == " ".join(line.split())


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Generator:
    config: Config = tiny_config(tmp_path_factory.mktemp("fuzz"), train={"max_steps": 5})
    api.train(config, show_progress=False)
    return api.load(config.train.model_dir)


OPTION_NAMES = [
    "beam",
    "beam_size",
    "nbest",
    "method",
    "max_length_a",
    "max_length_b",
    "top_p",
    "groups",
    "x",
]


@FUZZ
@given(options=st.dictionaries(st.sampled_from(OPTION_NAMES), VALUES, max_size=4))
def test_generation_options_raise_only_their_own_error(generator: Generator, options: dict[str, Any]) -> None:
    with contextlib.suppress(SeqsmithError):
        generator.settings(**options)


@FUZZ
@given(payload=VALUES | st.dictionaries(st.sampled_from(["texts", "options", "nbest"]), VALUES, max_size=3))
def test_the_servers_request_model_raises_only_validation_errors(payload: Any) -> None:
    from seqsmith.serving.app import GenerateRequest

    with contextlib.suppress(ValidationError):
        GenerateRequest.model_validate(json.loads(json.dumps(payload, default=str)))
