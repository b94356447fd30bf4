"""No <unk> in what users read: replace_unk against the search's own attention, special tokens hidden for
every model family and search, and prepare counting the lines a vocabulary cannot spell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_config
from toy_model import ToyModel

from seqsmith import api
from seqsmith.config import ConvConfig, GenerateConfig, RNNConfig, TokenizerConfig, TransformerConfig
from seqsmith.data.tokenizer import Tokenizers, WordTokenizer
from seqsmith.generation.generator import Generator
from seqsmith.generation.search import search_all
from seqsmith.generation.unknown import replace_unknown
from seqsmith.models.build import build_model
from seqsmith.models.model_dir import LoadedModel
from seqsmith.specials import EOS_ID, SEP, SPECIALS, UNK_ID

SHOWN_NEVER = [*SPECIALS, SEP]


def _words(*known: str) -> Tokenizers:
    tokenizer = WordTokenizer([*SPECIALS, SEP, *known])
    return Tokenizers(tokenizer, tokenizer, True)


def test_replace_unk_copies_the_source_token_the_search_attended_to_most() -> None:
    """The replacement recomputes attention by teacher forcing; the search kept its own: both must pick
    the same source token, and an unknown source token comes back as the word it stood for."""
    tokenizers = _words("a")
    text = "a zebra a emu"
    source = [*tokenizers.source.encode(text), EOS_ID]
    assert source == [5, UNK_ID, 5, UNK_ID, EOS_ID]
    model = ToyModel(vocab_size=6, seed=0).eval()
    with torch.no_grad():
        model.out.bias[UNK_ID] += 6.0  # the model now writes <unk> most of the time
    config = GenerateConfig(method="beam", beam_size=3, max_length_a=0, max_length_b=8, keep_attention=True)
    ((best, *_),) = search_all(model, [source], config)
    unknown = [t for t, token in enumerate(best.tokens) if token == UNK_ID]
    assert len(unknown) >= 2
    assert best.attention is not None
    blind = type(best)(best.tokens, best.score, best.log_prob, best.token_log_probs, None)
    tokens, texts = replace_unknown(model, tokenizers, text, source, blind)
    words = text.split()
    for t in unknown:
        j = int(best.attention[t, :-1].argmax())  # the EOS column is never copied
        if source[j] == UNK_ID:
            assert texts[t] == words[j] and tokens[t] == UNK_ID
        else:
            assert tokens[t] == source[j] and t not in texts
    shown = tokenizers.decode_with_oovs(tokens, [], texts)
    assert "<unk>" not in shown and set(shown.split()) <= set(words)


def _families() -> dict[str, Any]:
    small = {"embed_dim": 16, "hidden_dim": 16, "dropout": 0.0}
    return {
        "transformer": TransformerConfig(d_model=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1),
        "gru": RNNConfig(**small),  # type: ignore[arg-type]
        "lstm": RNNConfig(cell="lstm", attention="luong_general", **small),  # type: ignore[arg-type]
        "pointer": RNNConfig(pointer_generator=True, coverage=True, share_embeddings=True, **small),  # type: ignore[arg-type]
        "conv": ConvConfig(embed_dim=16, encoder_channels=16, decoder_channels=16, dropout=0.0),
    }


SEARCHES = [
    {"method": "greedy"},
    {"method": "beam", "beam_size": 3, "nbest": 3},
    {"method": "sample", "temperature": 3.0, "seed": 1},
    {"method": "diverse_beam", "beam_size": 4, "groups": 2, "nbest": 4},
]


@pytest.mark.parametrize("family", list(_families()))
def test_no_special_token_text_in_any_output(tmp_path: Path, family: str) -> None:
    """Random weights emit every id, specials included; the text never shows one, with or without
    replace_unk, and the outputs did hold UNK and <sep> ids (so the check had something to hide)."""
    tokenizers = _words("the", "cat", "sat", "on", "mat")
    torch.manual_seed(0)
    model = build_model(_families()[family], 10, 10).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.mul_(4.0 if "output" in name or "embed" in name else 1.0)
    config = tiny_config(tmp_path)
    generator = Generator.from_loaded(LoadedModel(model, tokenizers, config))
    texts = ["the cat sat", "a dog sat on the mat", f"the {SEP} cat", "zebra emu"]
    emitted: set[int] = set()
    for search in SEARCHES:
        for replace in (True, False):
            options = {**search, "max_length_a": 0.0, "max_length_b": 12, "replace_unk": replace}
            for nbest in generator.generate_full(texts, **options):
                for output in nbest:
                    emitted.update(output.tokens)
                    assert not any(special in output.text for special in SHOWN_NEVER), output.text
    assert {UNK_ID, 4} <= emitted


def test_prepare_counts_the_lines_a_vocabulary_cannot_spell(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path, data={"tokenizer": {"kind": "word", "min_freq": 2, "byte_fallback": False}}
    )
    dev = Path(config.data.dev or "")
    dev.write_text("alpha beta\tbeta alpha\nalpha omega\tomega alpha\nbeta\tzeta psi\n", encoding="utf-8")
    report = api.prepare(config, show_progress=False)
    assert report.splits["dev"].unknown_source_lines == 1  # "omega"
    assert report.splits["dev"].unknown_target_lines == 2  # "omega", "psi"
    assert report.splits["train"].unknown_source_lines == 0
    saved = json.loads((Path(config.data.output_dir) / "report.json").read_text())
    assert saved["splits"]["dev"]["unknown_target_lines"] == 2
    spelled = tiny_config(tmp_path / "bytes", data={"tokenizer": {"kind": "word", "min_freq": 2}})
    Path(spelled.data.dev or "").write_text(dev.read_text(encoding="utf-8"), encoding="utf-8")
    assert api.prepare(spelled, show_progress=False).splits["dev"].unknown_target_lines == 0
    tokenizers = Tokenizers.load(Path(spelled.data.output_dir) / "tokenizer")
    assert tokenizers.target.decode(tokenizers.target.encode("zeta psi omega")) == "zeta psi omega"


def test_byte_fallback_is_the_default_for_new_vocabularies() -> None:
    assert TokenizerConfig().byte_fallback
    tokenizers = Tokenizers.train(TokenizerConfig(kind="char"), ["abc"], ["abc"])
    assert tokenizers.source.decode(tokenizers.source.encode("a☃c")) == "a☃c"
