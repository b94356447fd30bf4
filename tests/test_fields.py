"""Named input fields: sources of several texts through prepare, models, search, the CLI and the server;
the CMU_DoG and WebNLG readers; segment embeddings."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import tiny_config

from seqsmith import api
from seqsmith.cli import main
from seqsmith.config import Config, config_from_dict
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.data.corpus import read_split
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.models.model_dir import TOKENIZER
from seqsmith.specials import EOS_ID, SEP

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]
FIELDS = [
    {"name": "context", "max_length": 4, "truncate_from": "left"},
    {"name": "facts", "max_length": 5},
]


def write_rows(path: Path, count: int, seed: int) -> list[dict[str, str]]:
    """Context and facts: the target is the facts' words in reverse, so the model must read the facts."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 7)))
        facts = [rng.choice(WORDS) for _ in range(rng.randint(1, 7))]
        rows.append({"context": context, "facts": " ".join(facts), "target": " ".join(reversed(facts[:5]))})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def fields_config(tmp_path: Path, **model: Any) -> Config:
    base = tiny_config(tmp_path, train={"max_steps": 150})
    raw = base.model_dump(mode="json")
    for split, count in (("train", 400), ("dev", 30), ("test", 30)):
        write_rows(tmp_path / "corpus" / f"{split}.jsonl", count, seed=len(split))
        raw["data"][split] = str(tmp_path / "corpus" / f"{split}.jsonl")
    raw["data"].update({"format": "jsonl", "fields": FIELDS, "max_source_length": 16})
    raw["model"].update(model)
    return config_from_dict(raw, "fields test config")


def test_each_field_is_cut_to_its_own_length_behind_its_marker(tmp_path: Path) -> None:
    config = fields_config(tmp_path)
    api.prepare(config, show_progress=False)
    data = Path(config.data.output_dir)
    tokenizers = Tokenizers.load(data / TOKENIZER)
    encode = tokenizers.source.encode
    split = BinarizedSplit(data, "dev")
    rows = [json.loads(line) for line in (tmp_path / "corpus" / "dev.jsonl").read_text().splitlines()]
    for index, row in enumerate(rows):  # each field encoded alone, cut by slicing: an independent route
        expected = [
            *encode("<context>"),
            *encode(row["context"])[-4:],
            *encode("<facts>"),
            *encode(row["facts"])[:5],
            EOS_ID,
        ]
        assert split.source(index).tolist() == expected


def test_with_sentencepiece_a_field_holds_its_own_pieces_behind_its_marker_symbol(tmp_path: Path) -> None:
    """SentencePiece encodes ``<facts>`` as a bare word-start piece and then the symbol: the fields must be
    found by the symbol, and the piece left out (the route of an earlier bug: cut at every word start)."""
    import sentencepiece as spm

    from seqsmith.models.model_dir import build_from_config

    raw = fields_config(tmp_path, segment_embeddings=True).model_dump(mode="json")
    raw["data"]["tokenizer"] = {"kind": "sentencepiece", "vocab_size": 40, "byte_fallback": False}
    config = config_from_dict(raw, "fields test config")
    api.prepare(config, show_progress=False)
    data = Path(config.data.output_dir)
    processor = spm.SentencePieceProcessor(model_file=str(next((data / TOKENIZER).glob("*.model"))))
    context, facts = processor.piece_to_id("<context>"), processor.piece_to_id("<facts>")
    assert processor.encode("<facts>") != [facts]  # the case this test is about
    model = build_from_config(config, Tokenizers.load(data / TOKENIZER))
    split = BinarizedSplit(data, "dev")
    rows = [json.loads(line) for line in (tmp_path / "corpus" / "dev.jsonl").read_text().splitlines()]
    for index, row in enumerate(rows):
        first, second = processor.encode(row["context"])[-4:], processor.encode(row["facts"])[:5]
        source = split.source(index).tolist()
        assert source == [context, *first, facts, *second, EOS_ID]
        segments = model.segments(torch.tensor([source]))  # type: ignore[operator]
        assert segments.tolist() == [[1] * (1 + len(first)) + [2] * (2 + len(second))]

    raw["data"]["tokenizer"]["path"] = str(data / TOKENIZER)  # another prepare with this tokenizer: the same
    raw["data"]["output_dir"] = str(tmp_path / "again")
    api.prepare(config_from_dict(raw, "same tokenizer"), show_progress=False)
    assert BinarizedSplit(tmp_path / "again", "dev").source(3).tolist() == split.source(3).tolist()
    raw["data"]["fields"] = [*FIELDS, {"name": "extra", "required": False}]
    with pytest.raises(
        SeqsmithError, match=r"'<extra>' \(a tag, blank token or field marker of data\) is not"
    ):
        api.prepare(config_from_dict(raw, "a marker the tokenizer lacks"), show_progress=False)


@pytest.fixture(scope="module")
def fields_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = fields_config(tmp_path_factory.mktemp("fields"), segment_embeddings=True)
    api.train(config, show_progress=False)
    return Path(config.train.model_dir)


def test_a_fields_model_generates_from_objects_by_api_cli_and_search(
    fields_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = fields_model
    generator = api.load(model_dir)
    assert generator.fields == ["context", "facts"]
    inputs = [
        {"context": "alpha beta", "facts": "gamma delta eps"},
        {"context": "iota", "facts": "kappa zeta"},
    ]
    greedy = generator.generate(inputs)
    joined = "<context> alpha beta <facts> gamma delta eps"
    assert generator.generate([joined]) == greedy[:1]  # an object is its fields' joined text
    assert generator.generate(inputs, method="beam", beam_size=1) == greedy
    assert len(generator.generate_full(inputs, beam=4, nbest=4)[0]) == 4
    scores = api.evaluate_model(model_dir, "test", ["bleu"])  # the prepared split's joined sources
    assert 0 <= scores["bleu"]["score"] <= 100
    lines = tmp_path / "inputs.jsonl"
    lines.write_text("".join(json.dumps(i) + "\n" for i in inputs), encoding="utf-8")
    capsys.readouterr()
    assert main(["generate", str(model_dir), "-i", str(lines)]) == 0
    assert capsys.readouterr().out.splitlines() == greedy
    # inputs the model cannot read: one line, naming the field and the place
    bad = [
        ({"context": "alpha"}, "input 1: no field 'facts' (has: context)"),
        ({"context": "alpha", "facts": "beta", "topic": "x"}, "input 1: field 'topic' is not one this model"),
        ({"context": "alpha", "facts": "  "}, "input 1: field 'facts' is empty"),
        (
            {"context": "alpha <facts> beta", "facts": "x"},
            "input 1: field 'context' holds '<facts>', the marker",
        ),
        ("alpha beta", "input 1: this model reads the fields context, facts"),
    ]
    for item, message in bad:
        with pytest.raises(SeqsmithError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
            generator.generate([item])
    lines.write_text('{"context": "alpha", "facts": "beta"}\nnot json\n', encoding="utf-8")
    assert main(["generate", str(model_dir), "-i", str(lines)]) == 2
    assert f"{lines}:2: not a JSON object" in capsys.readouterr().err
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from seqsmith.serving.app import create_app

    with TestClient(create_app(generator)) as client:
        answer = client.post("/generate", json={"texts": inputs})
        assert answer.status_code == 200
        assert answer.json()["outputs"] == greedy
        assert client.get("/info").json()["fields"] == ["context", "facts"]  # the page asks for objects
        refused = client.post("/generate", json={"texts": [{"context": "alpha"}]})
        assert refused.status_code == 400 and "no field 'facts'" in refused.json()["detail"]


def test_onnx_runs_the_segment_embeddings_and_ctranslate2_refuses_them(
    fields_model: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    inputs = [
        {"context": "alpha beta", "facts": "gamma delta eps"},
        {"context": "iota", "facts": "kappa zeta"},
    ]
    ours = api.load(fields_model).generate_full(inputs, beam=3)
    theirs = api.load(api.export(fields_model, tmp_path / "onnx", "onnx")).generate_full(inputs, beam=3)
    assert [o[0].tokens for o in theirs] == [o[0].tokens for o in ours]
    assert [o[0].score for o in theirs] == pytest.approx([o[0].score for o in ours], abs=1e-4)
    with pytest.raises(SeqsmithError, match=r"CTranslate2 cannot express segment embeddings"):
        api.export(fields_model, tmp_path / "ct2", "ctranslate2")
    assert not (tmp_path / "ct2").exists()


def test_segments_follow_the_markers(tmp_path: Path) -> None:
    config = fields_config(tmp_path, segment_embeddings=True)
    api.prepare(config, show_progress=False)
    from seqsmith.models.model_dir import build_from_config

    tokenizers = Tokenizers.load(Path(config.data.output_dir) / TOKENIZER)
    model = build_from_config(config, tokenizers)
    context, facts = tokenizers.source.encode("<context>")[0], tokenizers.source.encode("<facts>")[0]
    word = tokenizers.source.encode("alpha")[0]
    src = torch.tensor(
        [[word, context, word, word, facts, word, EOS_ID], [context, word, facts, EOS_ID, 0, 0, 0]]
    )
    assert model.segments(src).tolist() == [[0, 1, 1, 1, 2, 2, 2], [1, 1, 2, 2, 2, 2, 2]]  # type: ignore[operator]
    plain = tiny_config(tmp_path / "plain")
    assert not hasattr(build_from_config(plain, tokenizers), "segment_embedding")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "tsv"}, "data.fields needs format jsonl, cmu_dog or webnlg, not tsv"),
        ({"fields": [FIELDS[0], FIELDS[0]]}, "data.fields names a field twice"),
        (
            {"max_source_length": 8},
            "data.fields take up to 11 tokens with their markers, over max_source_length=8",
        ),
        ({"fields": [{"name": "Facts"}]}, "String should match pattern"),
        ({"reverse_source": True}, "data.reverse_source would turn the fields' markers around"),
        (
            {"augment": [{"copies": 1, "transforms": [{"kind": "drop", "p": 0.1}]}]},
            "data.augment and corpus transforms change one source text",
        ),
    ],
)
def test_a_bad_fields_config_is_one_line(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    raw = fields_config(tmp_path).model_dump(mode="json")
    raw["data"].update(change)
    with pytest.raises(SeqsmithError, match=message.replace("(", r"\(")):
        config_from_dict(raw, "test")


def test_segment_embeddings_need_fields(tmp_path: Path) -> None:
    raw = tiny_config(tmp_path).model_dump(mode="json")
    raw["model"]["segment_embeddings"] = True
    with pytest.raises(SeqsmithError, match="model.segment_embeddings tells the fields of data.fields apart"):
        config_from_dict(raw, "test")


def test_a_missing_field_in_the_data_names_the_line(tmp_path: Path) -> None:
    config = fields_config(tmp_path)
    path = Path(config.data.train if isinstance(config.data.train, str) else "")
    lines = path.read_text().splitlines()
    lines[6] = json.dumps({"context": "alpha", "target": "beta"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SeqsmithError, match=rf"{path}:7: no field 'facts' \(has: context, target\)"):
        list(read_split(config.data, "train"))


def write_conversation(
    directory: Path, name: str, saw: list[str], history: list[tuple[str, str, int]]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    messages = [{"uid": uid, "text": text, "docIdx": section} for uid, text, section in history]
    conversation = {"whoSawDoc": saw, "wikiDocumentIdx": 7, "history": messages}
    (directory / f"{name}.json").write_text(json.dumps(conversation), encoding="utf-8")


def test_cmu_dog_turns_of_the_speaker_who_saw_the_document(tmp_path: Path) -> None:
    wiki = tmp_path / "WikiData"
    wiki.mkdir()
    article = {
        "0": {"movieName": "Up", "cast": ["Carl", "Russell"]},
        "1": "A house flies.",
        "2": "A dog talks.",
        "3": "They land.",
        "wikiDocumentIdx": 7,
    }
    (wiki / "Up.json").write_text(json.dumps(article), encoding="utf-8")
    talk = [
        ("user1", "hi", 0),
        ("user2", "hello", 0),
        ("user2", "seen it?", 0),  # same speaker again: one turn with the message before
        ("user1", "", 1),  # empty: dropped
        ("user1", "the house flies", 1),
        ("user2", "wow", 2),
        ("user1", "and a dog talks", 2),
    ]
    write_conversation(tmp_path / "train", "c1", ["user1"], talk)
    raw = tiny_config(tmp_path).model_dump(mode="json")
    raw["data"].update(
        {
            "format": "cmu_dog",
            "train": str(tmp_path / "train"),
            "dev": None,
            "test": None,
            "documents": str(wiki),
            "history": 2,
            "fields": [{"name": "history"}, {"name": "document"}],
        }
    )
    config = config_from_dict(raw, "cmu_dog test")
    examples = list(read_split(config.data, "train"))
    assert [e.target for e in examples] == [
        "the house flies",
        "and a dog talks",
    ]  # user1's turns after the first
    assert examples[0].source == f"<history> hi {SEP} hello seen it? <document> A house flies."
    assert examples[1].source == f"<history> the house flies {SEP} wow <document> A dog talks."
    raw["data"]["fields"] = [{"name": "document"}]
    only_document = list(read_split(config_from_dict(raw, "test").data, "train"))
    assert only_document[0].source == "<document> A house flies."
    write_conversation(tmp_path / "facts", "c2", ["user2"], [("user1", "hi", 0), ("user2", "it is Up", 0)])
    raw["data"]["train"] = str(tmp_path / "facts")
    (facts,) = list(read_split(config_from_dict(raw, "test").data, "train"))
    assert facts.source == "<document> movieName: Up. cast: Carl; Russell."
    other = {
        "0": {"movieName": "Jaws"},
        "1": "A shark.",
        "2": "A boat.",
        "3": "The end.",
        "wikiDocumentIdx": 8,
    }
    (wiki / "Jaws.json").write_text(json.dumps(other), encoding="utf-8")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "c3.json").write_text('{"wikiDocumentIdx": 7, "history": [{"text": "hi"}]}')
    raw["data"]["train"] = str(tmp_path / "broken")
    with pytest.raises(SeqsmithError, match=r"c3.json: not a CMU_DoG conversation \(history needs uid"):
        list(read_split(config_from_dict(raw, "test").data, "train"))
    raw["data"]["train"] = str(tmp_path / "facts")
    raw["data"]["shuffle_documents"] = True  # two articles: each conversation reads the other one
    (wrong,) = list(read_split(config_from_dict(raw, "test").data, "train"))
    assert wrong.source == "<document> movieName: Jaws." and wrong.target == facts.target


WEBNLG = """<?xml version="1.0" ?>
<benchmark><entries>
<entry category="Airport" eid="Id1" size="2">
<modifiedtripleset><mtriple>Aarhus_Airport | cityServed | "Aarhus, Denmark"</mtriple>
<mtriple>Aarhus | country | Denmark</mtriple></modifiedtripleset>
<lex comment="good" lid="Id1"><text>Aarhus Airport serves Aarhus, Denmark.</text></lex>
<lex comment="good" lid="Id2"><text>Aarhus, in Denmark, has Aarhus Airport.</text></lex>
</entry>
</entries></benchmark>
"""


def test_webnlg_triples_linearized_with_roles_and_every_text_a_reference(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / split / "2triples").mkdir(parents=True)
        (tmp_path / split / "2triples" / "Airport.xml").write_text(WEBNLG, encoding="utf-8")
    raw = tiny_config(tmp_path).model_dump(mode="json")
    raw["data"].update(
        {
            "format": "webnlg",
            "train": str(tmp_path / "train"),
            "dev": None,
            "test": str(tmp_path / "test"),
            "fields": [{"name": "triples", "kind": "triples"}],
        }
    )
    data = config_from_dict(raw, "webnlg test").data
    source = (
        "<triples> <S> Aarhus Airport <P> city served <O> Aarhus, Denmark <S> Aarhus <P> country <O> Denmark"
    )
    train = list(read_split(data, "train"))
    assert [(e.source, e.target) for e in train] == [
        (source, "Aarhus Airport serves Aarhus, Denmark."),
        (source, "Aarhus, in Denmark, has Aarhus Airport."),
    ]
    (test,) = list(read_split(data, "test"))
    assert test.references == [t for _, t in [(e.source, e.target) for e in train]]
    raw["data"]["fields"] = [{"name": "triples"}]
    with pytest.raises(SeqsmithError, match="format webnlg reads facts: give its field kind: triples"):
        config_from_dict(raw, "text field")
    raw["data"]["fields"] = [{"name": "triples", "kind": "triples"}]
    raw["data"]["categories"] = ["Food"]
    assert list(read_split(config_from_dict(raw, "food").data, "test")) == []  # no entry of that category
    assert {"<S>", "<P>", "<O>", "<triples>"} <= set(data.symbols)


def test_cut_fields_keeps_each_side_and_a_zero_length_field_keeps_its_marker() -> None:
    from seqsmith.config import FieldConfig
    from seqsmith.data.fields import cut_fields

    markers = {
        10: FieldConfig(name="a", max_length=2, truncate_from="left"),
        11: FieldConfig(name="b", max_length=0, truncate_from="left"),
        12: FieldConfig(name="c", max_length=2),
    }
    assert cut_fields([9, 10, 1, 2, 3, 11, 4, 5, 12, 6, 7, 8], markers) == [9, 10, 2, 3, 11, 12, 6, 7]
    spaced = [0, 10, 1, 2, 3, 0, 11, 4, 0, 12, 6, 0, 7]  # 0: a piece a tokenizer puts before each marker
    assert cut_fields(spaced, markers, before={0}) == [10, 2, 3, 11, 12, 6, 0]


SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.mark.may_skip
def test_cmu_dog_valid_split_gives_every_grounded_turn() -> None:
    if not (SHARED / "cmu_dog").is_dir():
        pytest.skip("needs ../shared/data/cmu_dog")
    config = api.load_config(Path(__file__).resolve().parent.parent / "configs" / "cmu_dog_concat.yaml")
    data = config.data.model_copy(
        update={
            "dev": str(SHARED / "cmu_dog/Conversations/valid"),
            "documents": str(SHARED / "cmu_dog/WikiData"),
        }
    )
    examples = list(read_split(data, "dev"))
    expected = 0  # counted here by its own loop over the files: turns after the first, of a speaker who saw
    for path in sorted((SHARED / "cmu_dog/Conversations/valid").glob("*.json")):
        conversation = json.loads(path.read_text(encoding="utf-8"))
        speakers: list[str] = []
        for message in conversation["history"]:
            if message["text"].strip() and (not speakers or speakers[-1] != message["uid"]):
                speakers.append(message["uid"])
        expected += sum(s in conversation["whoSawDoc"] for s in speakers[1:])
    assert len(examples) == expected > 3000
    assert all(e.source.startswith("<history> ") and " <document> " in e.source for e in examples)


@pytest.mark.may_skip
def test_webnlg_gives_one_example_a_text_in_train_and_one_an_entry_in_test() -> None:
    if not (SHARED / "webnlg").is_dir():
        pytest.skip("needs ../shared/data/webnlg")
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "webnlg.yaml").read_text())
    raw["data"].update({split: str(SHARED / "webnlg" / split) for split in ("train", "dev", "test")})
    data = config_from_dict(raw, "webnlg").data
    files = {split: sorted((SHARED / "webnlg" / split).rglob("*.xml")) for split in ("train", "test")}
    texts = sum(len(re.findall(r"<lex\b", p.read_text(encoding="utf-8"))) for p in files["train"])
    entries = sum(len(re.findall(r"<entry\b", p.read_text(encoding="utf-8"))) for p in files["test"])
    train, test = list(read_split(data, "train")), list(read_split(data, "test"))
    assert len(train) == texts == 18_102  # the counts the data's README gives
    assert len(test) == entries == 1_862
    assert sum(len(e.references) for e in test) == 4_928


def test_the_report_shows_the_attention_over_each_field(fields_model: Path) -> None:
    from seqsmith.evaluation.report import field_spans

    tokens = ["<context>", "alpha", "beta", "<facts>", "gamma", "</s>"]
    assert field_spans(tokens, ["context", "facts"]) == [("context", 0, 3), ("facts", 3, 6)]
    assert field_spans(tokens, []) == []
    page = api.report(fields_model, examples=2)
    pictures = sorted(p.name for p in page.parent.glob("attention_*.png"))
    assert pictures == [
        "attention_1_context.png",
        "attention_1_facts.png",
        "attention_2_context.png",
        "attention_2_facts.png",
    ]
    assert "over the field facts" in page.read_text(encoding="utf-8")


def test_the_knowledge_encoder_reads_its_field_alone_and_the_decoder_reads_both(tmp_path: Path) -> None:
    config = fields_config(tmp_path, knowledge_field="facts", knowledge_layers=1, dropout=0.0)
    config.train.max_steps = 30
    api.train(config, show_progress=False)
    generator = api.load(config.train.model_dir)
    model = generator.model
    assert model is not None and hasattr(model, "knowledge_layers")
    torch.manual_seed(0)

    def ids(context: str, facts: str) -> torch.Tensor:
        return torch.tensor([generator.encode(generator.source_text({"context": context, "facts": facts}))])

    a, b, c = (
        ids("alpha beta", "gamma delta"),
        ids("alpha beta", "kappa iota"),
        ids("zeta eta", "gamma delta"),
    )
    assert a.shape == b.shape == c.shape
    memories = [model.encode(x, x != 0) for x in (a, b, c)]
    facts_at = (model.segments(a) == 2)[0]  # type: ignore[operator]
    assert [m.states.size(1) for m in memories] == [int((~facts_at).sum())] * 3  # the main field's alone
    main = [m.states[0] for m in memories]
    knowing = [m.knowledge_keys[0][0] for m in memories]  # type: ignore[attr-defined]
    assert knowing[0].size(1) == int(facts_at.sum())
    assert torch.equal(main[0], main[1]) and not torch.equal(main[0], main[2])  # facts do not reach it
    assert torch.equal(knowing[0], knowing[2]) and not torch.equal(knowing[0], knowing[1])  # nor context
    tgt_in = torch.tensor([[2, *generator.encode("delta gamma")[:-1]]])
    teacher = torch.log_softmax(model(a, a != 0, tgt_in), -1)
    state, steps = None, []
    memory = model.encode(a, a != 0)
    for t in range(tgt_in.size(1)):  # step by step through the caches equals the teacher-forced pass
        log_probs, state = model.decode_step(tgt_in[:, t], memory, state)
        steps.append(log_probs)
    assert torch.allclose(torch.stack(steps, 1), teacher, atol=1e-5)
    other = torch.log_softmax(model(b, b != 0, tgt_in), -1)
    assert not torch.allclose(other, teacher, atol=1e-3)  # the decoder reads the knowledge
    check_packed_encoders(model, [a[0], ids("eta", "iota kappa zeta theta lambda")[0]], tgt_in[0])
    inputs = [
        {"context": "alpha beta", "facts": "gamma delta"},
        {"context": "eta", "facts": "iota kappa zeta"},
    ]
    assert generator.generate(inputs, method="beam", beam_size=1) == generator.generate(inputs)
    assert len(generator.generate_full(inputs, beam=3, nbest=3)[1]) == 3
    assert len(generator.generate(inputs, method="sample", seed=1)) == 2
    int8 = api.load(config.train.model_dir, quantize="int8")  # both encoders quantized
    modules = {type(m).__module__ for m in int8.model.knowledge_layers.modules()}  # type: ignore[union-attr]
    assert "torch.ao.nn.quantized.dynamic.modules.linear" in modules
    quantized = torch.log_softmax(int8.model(a, a != 0, tgt_in), -1)  # type: ignore[misc]
    assert torch.allclose(quantized, teacher, atol=0.1)  # not the best outputs' scores: a near-tie flips
    assert len(int8.generate_full(inputs)) == 2
    for fmt in ("onnx", "ctranslate2"):
        with pytest.raises(SeqsmithError, match=r"cannot express a second encoder \(model.knowledge_field\)"):
            api.export(config.train.model_dir, tmp_path / fmt, fmt)


def check_packed_encoders(model: Any, rows: list[torch.Tensor], tgt_in: torch.Tensor) -> None:
    """Each encoder runs over its own field's tokens packed to the front; in a padded batch it computes
    what it computes over the whole source with every other token masked out (the definition), a row
    gives what it gives alone, and the step attention comes back at the source's positions."""
    batch = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mask, segments = batch != 0, model.segments(batch)
    assert (mask.sum(1) > 0).all() and rows[0].numel() != rows[1].numel()
    main_mask = mask & (segments != 2)
    memory = model.encode(batch, mask)
    x = model.source_embedding(batch) * model.embed_scale + model.source_positions.table[: batch.size(1)]
    if model.config.segment_embeddings:
        x = x + model.segment_embedding(segments)
    masked, _ = model._encoder(x, main_mask, model.encoder_layers, model.encoder_norm)
    for row in range(2):
        count = int(main_mask[row].sum())
        assert torch.allclose(memory.states[row, :count], masked[row, main_mask[row]], atol=1e-5)
    targets = tgt_in.expand(2, -1)
    batched = torch.log_softmax(model(batch, mask, targets), -1)
    for row, ids in enumerate(rows):
        alone = torch.log_softmax(model(ids[None], ids[None] != 0, tgt_in[None]), -1)
        assert torch.allclose(batched[row], alone[0], atol=1e-5)
    _, state = model.decode_step(targets[:, 0], memory, None, need_attention=True)
    assert state.attention.shape == mask.shape
    assert torch.allclose(state.attention.sum(1), torch.ones(2))
    assert (state.attention[~main_mask] == 0).all() and (state.attention[main_mask] > 0).all()
    pictured = model.step_attention(state, heads=True)  # each field under the attention that reads it
    for field in (main_mask, mask & ~main_mask):
        weights = pictured * field[:, None, :]
        assert torch.allclose(weights.sum(-1), torch.ones(2, model.config.heads))
    assert (pictured[~mask[:, None, :].expand_as(pictured)] == 0).all()


def test_the_knowledge_field_must_be_a_declared_field(tmp_path: Path) -> None:
    raw = fields_config(tmp_path).model_dump(mode="json")
    raw["model"]["knowledge_field"] = "document"
    with pytest.raises(SeqsmithError, match=r"model.knowledge_field 'document' must be one of two or more"):
        config_from_dict(raw, "test")
    raw["model"].update({"knowledge_field": "facts", "copy_source": True})
    with pytest.raises(SeqsmithError, match=r"model.copy_source reads the main cross-attention"):
        config_from_dict(raw, "test")


def test_the_pointer_generator_copies_from_a_field(tmp_path: Path) -> None:
    raw = fields_config(tmp_path).model_dump(mode="json")
    raw["model"] = {"arch": "rnn", "embed_dim": 32, "hidden_dim": 32, "pointer_generator": True}
    raw["train"].update({"max_steps": 200, "lr": 0.005})
    config = config_from_dict(raw, "pointer fields")
    api.train(config, show_progress=False)
    generator = api.load(config.train.model_dir)
    item = {"context": "alpha", "facts": "gamma delta"}
    output = generator.generate_full([item], keep_attention=True)[0][0]
    tokens = generator.pieces(generator.encode(generator.source_text(item)), [], "source")
    facts = tokens.index("<facts>")
    attention = torch.tensor(output.attention)  # (target, source): the copy distribution's weights
    assert attention.shape[1] == len(tokens)
    assert attention[:, facts + 1 :].sum() > attention[:, : facts + 1].sum()  # it reads the facts it reverses


def test_a_model_scores_another_test_set_prepared_with_its_tokenizer(
    fields_model: Path, tmp_path: Path
) -> None:
    config = api.load(fields_model).full_config
    raw = config.model_dump(mode="json")
    rows = write_rows(tmp_path / "other" / "test.jsonl", 20, seed=99)
    raw["data"].update(
        {
            "test": str(tmp_path / "other" / "test.jsonl"),
            "output_dir": str(tmp_path / "runs" / "other" / "data"),
            "tokenizer": {**raw["data"]["tokenizer"], "path": str(fields_model / TOKENIZER)},
        }
    )
    raw["train"]["model_dir"] = str(tmp_path / "unused")
    other = config_from_dict(raw, "other test set")
    api.prepare(other, show_progress=False)
    data_dir = Path(other.data.output_dir)
    scores = api.evaluate_model(fields_model, "test", ["bleu"], data=data_dir)
    hypotheses = (fields_model / "eval" / "test-other" / "hypotheses.txt").read_text().splitlines()
    inputs = [{"context": row["context"], "facts": row["facts"]} for row in rows]
    assert hypotheses == api.load(fields_model).generate(inputs)  # the other set's inputs, decoded
    assert scores["bleu"]["score"] != api.evaluate_model(fields_model, "test", ["bleu"])["bleu"]["score"]
    raw["data"]["tokenizer"] = {"kind": "char", "joint": True, "byte_fallback": False}
    raw["data"]["output_dir"] = str(tmp_path / "runs" / "char" / "data")
    api.prepare(config_from_dict(raw, "char"), show_progress=False)
    with pytest.raises(SeqsmithError, match="was prepared with another vocabulary than the model"):
        api.evaluate_model(fields_model, "test", ["bleu"], data=tmp_path / "runs" / "char" / "data")


def test_deranged_moves_every_key_and_repeats_with_its_seed() -> None:
    from seqsmith.data.grounded import deranged

    keys = list(range(30))
    moved = deranged(keys, 4)
    assert sorted(moved.values()) == keys and all(moved[k] != k for k in keys)
    assert moved == deranged(keys, 4) != deranged(keys, 5)


def test_facts_and_context_from_json_lines_are_a_config(tmp_path: Path) -> None:
    path = tmp_path / "facts.jsonl"
    rows = [
        {
            "facts": ["Alan_Bean | birthPlace | Wheeler,_Texas", ["Alan Bean", "occupation", "test pilot"]],
            "context": "who is he?",
            "target": "A test pilot born in Wheeler.",
        },
        {"facts": ["Alan_Bean | nationality"], "context": "x", "target": "y"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    raw = tiny_config(tmp_path).model_dump(mode="json")
    raw["data"].update(
        {
            "format": "jsonl",
            "train": str(path),
            "dev": None,
            "test": None,
            "fields": [{"name": "facts", "kind": "triples"}, {"name": "context"}],
        }
    )
    data = config_from_dict(raw, "facts").data
    examples = read_split(data, "train")
    assert next(examples).source == (
        "<facts> <S> Alan Bean <P> birth place <O> Wheeler, Texas <S> Alan Bean <P> occupation "
        "<O> test pilot <context> who is he?"
    )
    with pytest.raises(
        SeqsmithError, match=rf"{path}:2: field 'facts': fact 'Alan_Bean \| nationality' is not"
    ):
        next(examples)
    assert {"<S>", "<P>", "<O>"} <= set(data.symbols)
