"""prepare: counts, ids equal to an independent re-encoding, raw texts, atomic replacement, real data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm

from seqsmith.config import Config, config_from_dict
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.data.prepare import prepare
from seqsmith.data.tokenizer import Tokenizers, encode_source
from seqsmith.errors import SeqsmithError

DATA = Path(__file__).parents[2] / "shared" / "data"
TRAIN = [
    ("the cat sat on the mat", "die Katze saß auf der Matte"),
    ("a dog", "ein Hund"),
    ("", "leer"),
    ("one two three four five six seven eight nine ten", "zu lang"),
    ("the dog sat", "der Hund saß"),
]
DEV = [("the cat", "die Katze"), ("one two three four five six seven eight nine ten eleven", "lang")]


def write_pairs(prefix: Path, pairs: list[tuple[str, str]]) -> None:
    prefix.with_suffix(".src").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    prefix.with_suffix(".tgt").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")


def make_config(tmp_path: Path, **data: Any) -> Config:
    write_pairs(tmp_path / "train", TRAIN)
    write_pairs(tmp_path / "dev", DEV)
    fields = {
        "train": str(tmp_path / "train"),
        "dev": str(tmp_path / "dev"),
        "tokenizer": {"kind": "word"},
        "max_source_length": 8,
        "max_target_length": 8,
        "output_dir": str(tmp_path / "out"),
        **data,
    }
    return config_from_dict({"data": fields})


def test_counts_report_and_ids_equal_an_independent_encoding(tmp_path: Path) -> None:
    report = prepare(make_config(tmp_path), progress=False)
    train, dev = report.splits["train"], report.splits["dev"]
    assert (train.read, train.kept, train.empty_skipped, train.filtered_overlong) == (5, 3, 1, 1)
    assert train.empty_lines == [3]
    assert (dev.read, dev.kept, dev.truncated, dev.filtered_overlong) == (2, 2, 1, 0)
    out = tmp_path / "out"
    assert json.loads((out / "report.json").read_text()) == json.loads(report.to_json())
    assert report.output_dir == str(out) and not (tmp_path / "out.partial").exists()
    # the ids re-encoded from the vocabulary file alone: a word's id is its line, UNK=1, EOS=3 ends a source
    symbols = [json.loads(line) for line in (out / "tokenizer" / "joint.vocab").read_text().splitlines()]
    index = {symbol: i for i, symbol in enumerate(symbols)}
    assert report.source_vocab_size == len(symbols) and symbols[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    for name, pairs in [("train", [TRAIN[0], TRAIN[1], TRAIN[4]]), ("dev", DEV)]:
        split = BinarizedSplit(out, name)
        assert len(split) == len(pairs)
        for i, (source, target) in enumerate(pairs):
            assert split.source(i).tolist() == [*[index.get(w, 1) for w in source.split()][:8], 3]
            assert split.target(i).tolist() == [index.get(w, 1) for w in target.split()][:8]
        assert sum(split.source_lengths) == report.splits[name].source_tokens  # type: ignore[index]
    texts = list(BinarizedSplit(out, "dev").texts())
    assert [(t.source, t.references, t.line) for t in texts] == [
        (s, [t], i + 1) for i, (s, t) in enumerate(DEV)
    ]


def test_truncate_training_pairs_from_the_left_and_max_train_examples(tmp_path: Path) -> None:
    config = make_config(tmp_path, overlong="truncate", truncate_source_from="left", max_train_examples=4)
    report = prepare(config, progress=False)
    train = report.splits["train"]  # the first 4 non-empty pairs: lines 1, 2, 4, 5
    assert (train.read, train.kept, train.truncated, train.empty_skipped) == (5, 4, 1, 1)
    tokenizers = Tokenizers.load(tmp_path / "out" / "tokenizer")
    split = BinarizedSplit(tmp_path / "out", "train")
    assert split.source(2).tolist() == encode_source(tokenizers, TRAIN[3][0], config.data)
    assert tokenizers.source.decode(split.source(2)) == "three four five six seven eight nine ten"


def test_a_failed_run_keeps_the_previous_output(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    prepare(config, progress=False)
    out = tmp_path / "out"
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    (tmp_path / "dev.tgt").write_bytes(b"die Katze\n\xc3(\n")
    with pytest.raises(SeqsmithError, match=r"dev\.tgt:2: not valid UTF-8"):
        prepare(config, progress=False)
    after = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out"]


def test_a_training_split_without_a_pair_is_refused_and_the_previous_output_kept(tmp_path: Path) -> None:
    prepare(make_config(tmp_path), progress=False)
    before = (tmp_path / "out" / "report.json").read_bytes()
    config = make_config(tmp_path, max_source_length=1, max_target_length=1)  # every pair is too long
    left = r"data\.train: no training pair is left \(5 read, 1 empty, 4 longer"
    with pytest.raises(SeqsmithError, match=left):
        prepare(config, progress=False)
    assert (tmp_path / "out" / "report.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out"]


def test_a_corpus_that_gives_no_pair_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_config(tmp_path)
    (tmp_path / "blank.src").write_text("\n\n", encoding="utf-8")
    (tmp_path / "blank.tgt").write_text("\n\n", encoding="utf-8")
    train = [{"path": str(tmp_path / "train"), "weight": 1}, {"path": str(tmp_path / "blank"), "weight": 1}]
    config = make_config(tmp_path, train=train)
    with caplog.at_level("WARNING", logger="seqsmith.data.prepare"):
        report = prepare(config, progress=False)
    assert report.splits["train"].corpora == [3, 0]
    assert [r.getMessage() for r in caplog.records if "gave no pair" in r.getMessage()] == [
        f"seqsmith: prepare: the training corpus {tmp_path / 'blank'} gave no pair (empty, filtered, or past "
        "data.max_train_examples): its weight or upsample factor reads nothing"
    ]


def test_missing_split_file_fails_before_any_work(tmp_path: Path) -> None:
    config = make_config(tmp_path, test=str(tmp_path / "nowhere"))
    with pytest.raises(SeqsmithError, match=r"data\.test: file .*nowhere\.src not found"):
        prepare(config, progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_an_output_dir_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(SeqsmithError, match=r"data\.output_dir"):
        prepare(make_config(tmp_path), progress=False)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"


def test_progress_bars_go_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare(make_config(tmp_path), progress=True)
    captured = capsys.readouterr()
    assert "binarize train" in captured.err and "lines/s" in captured.err and captured.out == ""


def test_jsonl_with_several_references_and_sentencepiece(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    lines = [
        {"dialogue": f"#P1#: item {i} costs {i * 3} dollars.\n#P2#: ok", "summary": f"P1 sells {i}."}
        for i in range(200)
    ]
    train.write_text("".join(json.dumps(row) + "\n" for row in lines))
    test = tmp_path / "test.jsonl"
    test.write_text(
        json.dumps({"dialogue": "#P1#: hi", "summary1": "a", "summary2": "b", "summary3": "c"}) + "\n"
    )
    config = config_from_dict(
        {
            "data": {
                "format": "jsonl",
                "train": str(train),
                "test": str(test),
                "source_field": "dialogue",
                "target_field": "summary",
                "reference_fields": ["summary1", "summary2", "summary3"],
                "tokenizer": {"vocab_size": 60, "byte_fallback": False},
                "output_dir": str(tmp_path / "out"),
            }
        }
    )
    report = prepare(config, progress=False)
    assert report.splits["train"].kept == 200 and report.source_vocab_size == 60
    (text,) = BinarizedSplit(tmp_path / "out", "test").texts()
    assert (text.source, text.references) == ("#P1#: hi", ["a", "b", "c"])
    tokenizers = Tokenizers.load(tmp_path / "out" / "tokenizer")
    split = BinarizedSplit(tmp_path / "out", "train")
    assert tokenizers.source.decode(split.source(7)) == lines[7]["dialogue"]
    model_file = next((tmp_path / "out" / "tokenizer").glob("*.model"))
    processor = spm.SentencePieceProcessor(
        model_file=str(model_file)
    )  # sentencepiece itself, not our wrapper
    for i in (0, 7, 199):
        assert split.source(i).tolist() == [*processor.encode(lines[i]["dialogue"]), 3]
        assert split.target(i).tolist() == processor.encode(lines[i]["summary"])


def test_bpe_dropout_copies_spell_the_same_text_in_other_pieces(tmp_path: Path) -> None:
    words = ["house", "garden", "window", "kitchen", "table", "chair", "yellow", "orange", "noon", "dusk"]
    pairs = [
        (f"the {words[i % 10]} and the {words[i * 7 % 10]}", f"{words[i * 3 % 10]} {i}") for i in range(60)
    ]
    overlong = (" ".join(words * 5), "zu lang")  # filtered: copies are made of kept pairs only
    write_pairs(tmp_path / "train", [*pairs, overlong])
    write_pairs(tmp_path / "dev", pairs[:5])
    data = {
        "train": str(tmp_path / "train"),
        "dev": str(tmp_path / "dev"),
        "tokenizer": {"vocab_size": 80, "byte_fallback": False},
        "augment": [{"copies": 2, "transforms": [{"kind": "bpe_dropout", "alpha": 0.3}]}],
        "max_source_length": 40,
        "max_target_length": 40,
        "output_dir": str(tmp_path / "out"),
    }
    report = prepare(config_from_dict({"data": data}), progress=False)
    train = report.splits["train"]
    assert (train.kept, train.filtered_overlong, train.augmented) == (60, 1, 120)
    assert report.splits["dev"].augmented == 0
    split = BinarizedSplit(tmp_path / "out", "train")
    tokenizers = Tokenizers.load(tmp_path / "out" / "tokenizer")
    assert len(split) == 180 and len(BinarizedSplit(tmp_path / "out", "dev")) == 5
    best = [encode_source(tokenizers, source, config_from_dict({"data": data}).data) for source, _ in pairs]
    for i in range(180):  # originals first, then each chunk's copies in the same order
        source, target = pairs[i % 60]
        assert tokenizers.source.decode(split.source(i)) == source
        assert tokenizers.target.decode(split.target(i)) == target
    assert [split.source(i).tolist() for i in range(60)] == best
    resegmented = sum(split.source(i).tolist() != best[i % 60] for i in range(60, 180))
    assert resegmented > 30  # alpha 0.3 splits most of these sentences somewhere else
    first = (tmp_path / "out" / "train.source.bin").read_bytes()
    data["output_dir"] = str(tmp_path / "again")
    prepare(config_from_dict({"data": data}), progress=False)
    assert (tmp_path / "again" / "train.source.bin").read_bytes() == first  # seeded: the same every run


def test_bpe_dropout_needs_sentencepiece_and_the_old_keys_say_where_they_moved(tmp_path: Path) -> None:
    augment = [{"transforms": [{"kind": "bpe_dropout"}]}]
    config = make_config(tmp_path, tokenizer={"kind": "word"}, augment=augment)
    with pytest.raises(SeqsmithError, match=r"data.augment\[0\]: bpe_dropout samples SentencePiece"):
        prepare(config, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(SeqsmithError, match="moved to data.augment"):
        make_config(tmp_path, tokenizer={"sampling_copies": 1})


@pytest.mark.may_skip
@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data (real data sets, not in a fresh clone)")
def test_real_tatoeba_en_zh_targets_decode_to_the_references(tmp_path: Path) -> None:
    base = DATA / "tatoeba-en-zh"
    config = config_from_dict(
        {
            "data": {
                "train": str(base / "train"),
                "test": str(base / "test"),
                "source_suffix": "en",
                "target_suffix": "zh",
                "tokenizer": {"model_type": "unigram", "vocab_size": 8000, "character_coverage": 1.0},
                "output_dir": str(tmp_path / "out"),
            }
        }
    )
    report = prepare(config, progress=False)
    assert report.splits["test"].kept == report.splits["test"].read == 1000
    tokenizers = Tokenizers.load(tmp_path / "out" / "tokenizer")
    split = BinarizedSplit(tmp_path / "out", "test")
    exact = sum(
        tokenizers.target.decode(split.target(i)) == text.target for i, text in enumerate(split.texts())
    )
    assert exact >= 980, exact  # all but lines with characters never seen in train
