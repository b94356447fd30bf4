"""Hugging Face adapter: outputs identical to transformers' generate, Marian export and encoder import.

Tiny random Marian, T5 and BART models are built from configs and saved to tmp_path; nothing comes from
the hub. References are transformers itself: ``generate`` for outputs, a teacher-forced forward for
per-token log-probabilities.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from seqsmith.config import GenerateConfig, config_from_dict, save_config  # noqa: E402
from seqsmith.data.hf_tokenizer import HFTokenizers  # noqa: E402
from seqsmith.data.tokenizer import Tokenizers  # noqa: E402
from seqsmith.errors import SeqsmithError  # noqa: E402
from seqsmith.generation.search import generate_ids  # noqa: E402
from seqsmith.models.build import build_model  # noqa: E402
from seqsmith.models.hf import HFSeq2Seq, load_hf  # noqa: E402
from seqsmith.models.hf_export import export_marian  # noqa: E402
from seqsmith.models.interface import Seq2SeqModel  # noqa: E402
from seqsmith.models.marian import init_encoder_from_hf  # noqa: E402
from seqsmith.models.model_dir import save_weights  # noqa: E402
from seqsmith.models.transformer import TransformerModel  # noqa: E402
from seqsmith.specials import EOS_ID, PAD_ID  # noqa: E402
from seqsmith.training.losses import cross_entropy  # noqa: E402

VOCAB, MAX_NEW = 100, 8  # seqsmith's max length b; HF's max_new_tokens is one more (the EOS)
SEARCHES = [("greedy", 1, "none"), ("beam", 5, "none"), ("beam", 5, "average")]


class ForceEOSKeepingLogProb(transformers.LogitsProcessor):
    """seqsmith's rule at the maximum length: only EOS, with its own log-probability. (HF's
    ForcedEOSTokenLogitsProcessor gives it score 0, which ranks outputs cut at the limit higher.)"""

    def __init__(self, max_length: int, eos: int) -> None:
        self.max_length, self.eos = max_length, eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] != self.max_length - 1:
            return scores
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.eos] = scores[:, self.eos]
        return forced


def tiny_hf(kind: str, directory: Path) -> Path:
    """A random model whose outputs depend on the input and end at varied lengths (weights large
    enough for that, small enough that float32 rounding stays far below the 1e-4 tolerance)."""
    torch.manual_seed(0)
    init_std, eos_bias = {"marian": (0.5, 3.0), "bart": (0.3, 4.0)}.get(kind, (0.0, 0.0))
    shape = dict(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        init_std=init_std,
    )  # fmt: skip
    model: Any
    if kind == "marian":  # like opus-mt: pad is the decoder start and a bad word
        config = transformers.MarianConfig(
            **shape, pad_token_id=VOCAB - 1, eos_token_id=0, decoder_start_token_id=VOCAB - 1,
            forced_eos_token_id=0, scale_embedding=True, activation_function="relu",
        )  # fmt: skip
        model = transformers.MarianMTModel(config)
        model.generation_config.bad_words_ids = [[VOCAB - 1]]
    elif kind == "bart":  # decoder start == EOS
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(**shape))
    else:
        config = transformers.T5Config(
            vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            decoder_start_token_id=0, initializer_factor=2.0,
        )  # fmt: skip
        model = transformers.T5ForConditionalGeneration(config)
    if kind != "t5":
        with torch.no_grad():
            model.final_logits_bias[0, model.config.eos_token_id] = eos_bias
            model.final_logits_bias[0, model.config.pad_token_id] = 10.0  # likely, unless forbidden
    model.save_pretrained(str(directory))
    return directory


def random_sources(model: HFSeq2Seq, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random sources ending with EOS, padded with the adapter's pad id."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 12, (count,), generator=generator)
    src = torch.randint(4, VOCAB - 2, (count, 12), generator=generator)
    src[torch.arange(count), lengths - 1] = model.eos_id
    mask = torch.arange(12).unsqueeze(0) < lengths.unsqueeze(1)
    return src.masked_fill(~mask, model.pad_id), mask


def hf_generate(
    hf_model: Any,
    src: torch.Tensor,
    mask: torch.Tensor,
    beams: int,
    penalty: str,
    eos: int,
    early: bool = False,
):
    """transformers' generate with the settings that mean what seqsmith's GenerateConfig means."""
    return hf_model.generate(
        input_ids=src,
        attention_mask=mask.long(),
        num_beams=beams,
        do_sample=False,
        max_new_tokens=MAX_NEW + 1,
        length_penalty=1.0 if penalty == "average" else 0.0,  # divide by length**1 (EOS counted) or not
        early_stopping=early or "never",  # K ended, or no open beam bounded by the maximum length can win
        forced_eos_token_id=None,
        logits_processor=transformers.LogitsProcessorList([ForceEOSKeepingLogProb(MAX_NEW + 2, eos)]),
    )


def strip(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


@pytest.mark.parametrize("kind", ["marian", "t5", "bart"])
def test_search_matches_transformers_generate(kind: str, tmp_path: Path) -> None:
    model = load_hf(tiny_hf(kind, tmp_path))
    hf_model = model.hf
    src, mask = random_sources(model, 100)
    hf_src = src.masked_fill(~mask, model.hf_pad_id)
    lengths = set()
    for (method, beams, penalty), early in itertools.product(SEARCHES, (False, True)):
        config = GenerateConfig(
            method=method,
            beam_size=beams,
            length_penalty=penalty,
            max_length_a=0.0,
            max_length_b=MAX_NEW,
            early_stopping=early,
        )
        ours = generate_ids(model, src, mask, config)
        theirs = hf_generate(hf_model, hf_src, mask, beams, penalty, model.eos_id, early)[:, 1:].tolist()
        for row, nbest in enumerate(ours):
            assert nbest[0].tokens == strip(theirs[row], model.eos_id), (method, beams, penalty, early, row)
            lengths.add(len(nbest[0].tokens))
        check_token_log_probs(model, hf_src, mask, [nbest[0] for nbest in ours])
    assert len(lengths) > 2  # some outputs end early, some at the limit


def check_token_log_probs(model: HFSeq2Seq, src: torch.Tensor, mask: torch.Tensor, hypotheses: list) -> None:
    """Per-token log-probs (EOS included) against HF's teacher-forced log-softmax."""
    outputs = [[*h.tokens, model.eos_id] for h in hypotheses]
    width = max(len(o) for o in outputs)
    target = torch.full((len(outputs), width), model.hf_pad_id)
    for row, output in enumerate(outputs):
        target[row, : len(output)] = torch.tensor(output)
    start = torch.full((len(outputs), 1), model.decoder_start_id)
    with torch.no_grad():
        logits = model.hf(
            input_ids=src, attention_mask=mask.long(), decoder_input_ids=torch.cat([start, target[:, :-1]], 1)
        ).logits
    reference = logits.double().log_softmax(-1).gather(2, target.unsqueeze(2)).squeeze(2)
    for row, hypothesis in enumerate(hypotheses):
        ours = torch.tensor(hypothesis.token_log_probs, dtype=torch.float64)
        assert torch.allclose(ours, reference[row, : len(ours)], atol=1e-4)


def test_forced_first_token_like_generate(tmp_path: Path) -> None:
    """BART summarizers set forced_bos_token_id: HF forces it with score 0 at the first step."""
    tiny_hf("bart", tmp_path)
    settings = json.loads((tmp_path / "generation_config.json").read_text())
    (tmp_path / "generation_config.json").write_text(json.dumps({**settings, "forced_bos_token_id": 7}))
    model = load_hf(tmp_path)
    src, mask = random_sources(model, 20, seed=2)
    config = GenerateConfig(
        beam_size=5, length_penalty="average", max_length_a=0.0, max_length_b=MAX_NEW, early_stopping=False
    )
    ours = generate_ids(model, src, mask, config)
    theirs = hf_generate(model.hf, src.masked_fill(~mask, model.hf_pad_id), mask, 5, "average", model.eos_id)
    for nbest, row in zip(ours, theirs[:, 1:].tolist()):
        assert nbest[0].tokens[0] == 7 and nbest[0].token_log_probs[0] == 0.0
        assert nbest[0].tokens == strip(row, model.eos_id)


def test_forward_and_step_agree_with_hf_logits(tmp_path: Path) -> None:
    model = load_hf(tiny_hf("bart", tmp_path))
    src, mask = random_sources(model, 4, seed=1)
    tgt_in = torch.randint(4, VOCAB, (4, 6))
    tgt_in[:, 0] = model.bos_id
    scores = model(src, mask, tgt_in)
    memory, state, steps = model.encode(src, mask), None, []
    for t in range(tgt_in.size(1)):
        log_probs, state = model.decode_step(tgt_in[:, t], memory, state)
        steps.append(log_probs)
    stepped = torch.stack(steps, 1)
    assert stepped.shape[-1] == model.output_size == VOCAB + 1
    assert torch.isinf(stepped[..., VOCAB]).all()  # the virtual start id is never an output
    assert torch.allclose(stepped[..., :VOCAB], scores.log_softmax(-1), atol=1e-5)


def test_marian_pad_is_forbidden_like_generate(tmp_path: Path) -> None:
    model = load_hf(tiny_hf("marian", tmp_path))
    src, mask = random_sources(model, 3)
    log_probs, _ = model.decode_step(torch.full((3,), model.bos_id), model.encode(src, mask), None)
    assert torch.isinf(log_probs[:, model.hf_pad_id]).all()
    assert torch.isfinite(log_probs[:, : model.hf_pad_id]).all()


def test_fine_tuning_lowers_dev_loss(tmp_path: Path) -> None:
    """A plain loop over seqsmith's cross_entropy: learn to copy the source."""
    model = load_hf(tiny_hf("marian", tmp_path)).train()
    generator = torch.Generator().manual_seed(3)

    def batch(size: int) -> tuple[torch.Tensor, ...]:
        tokens = torch.randint(4, 20, (size, 6), generator=generator)
        src = torch.cat([tokens, torch.full((size, 1), model.eos_id)], 1)
        tgt_out = src.clone()
        tgt_in = torch.cat([torch.full((size, 1), model.bos_id), tokens], 1)
        return src, torch.ones_like(src, dtype=torch.bool), tgt_in, tgt_out

    dev = batch(64)

    def dev_loss() -> float:
        model.eval()
        with torch.no_grad():
            parts = cross_entropy(model(*dev[:3]), dev[3], model.pad_id, 0.0)
        model.train()
        return float(parts.nll) / parts.tokens

    before = dev_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        src, mask, tgt_in, tgt_out = batch(16)
        parts = cross_entropy(model(src, mask, tgt_in), tgt_out, model.pad_id, 0.1)
        optimizer.zero_grad()
        (parts.loss / parts.tokens).backward()
        optimizer.step()
    after = dev_loss()
    assert after < 0.5 * before, (before, after)


def write_word_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["<pad>", "</s>", "<unk>", "hello", "world", "seq", "smith"]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(directory))


def test_hf_tokenizers(tmp_path: Path) -> None:
    write_word_tokenizer(tmp_path / "tok")
    tokenizers = HFTokenizers.load(tmp_path / "tok")
    assert tokenizers.source.encode("hello seq smith") == [3, 5, 6]
    assert tokenizers.source.encode_batch(["world", "nope"]) == [[4], [2]]
    assert tokenizers.target.decode([3, 4, 1, 0]) == "hello world"  # specials dropped
    assert tokenizers.source.pieces("hello world") == ["hello", "world"]
    assert tokenizers.source.vocab_size == 7
    tokenizers.save(tmp_path / "again")
    assert HFTokenizers.load(tmp_path / "again").source.encode("smith hello") == [6, 3]
    with pytest.raises(SeqsmithError, match="tokenizer"):
        HFTokenizers.load(tmp_path / "missing")


def test_load_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SeqsmithError, match="not found"):
        load_hf(tmp_path / "nowhere")
    with pytest.raises(SeqsmithError, match="config.json is missing"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(SeqsmithError, match="not an encoder-decoder"):
        load_hf(tmp_path)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(SeqsmithError, match=r"pip install 'seqsmith\[hf\]'"):
        load_hf(tmp_path)


def seqsmith_model_dir(directory: Path, **model: Any) -> tuple[TransformerModel, Tokenizers]:
    """A tiny seqsmith Transformer directory with a joint SentencePiece vocabulary."""
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(300)]
    shape = dict(d_model=32, heads=4, ffn_dim=64, encoder_layers=2, decoder_layers=2, max_positions=64)
    config = config_from_dict(
        {
            "data": {"train": "unused", "tokenizer": {"vocab_size": 48, "byte_fallback": False}},
            "model": {**shape, **model},
        }
    )
    tokenizers = Tokenizers.train(config.data.tokenizer, lines, lines)
    torch.manual_seed(0)
    built = build_model(config.model, tokenizers.source.vocab_size, tokenizers.target.vocab_size)
    assert isinstance(built, TransformerModel)
    with torch.no_grad():  # sharper distributions and a likelier EOS: outputs of varied lengths
        built.source_embedding.weight.mul_(4.0)
        built.source_embedding.weight[EOS_ID].mul_(3.0)
    directory.mkdir()
    save_config(config, directory / "config.json")
    save_weights(built, directory / "model.safetensors")
    tokenizers.save(directory / "tokenizer")
    return built.eval(), tokenizers


def test_export_marian_matches_seqsmith(tmp_path: Path) -> None:
    model, tokenizers = seqsmith_model_dir(tmp_path / "seq", norm="post")
    out = export_marian(tmp_path / "seq", tmp_path / "marian")
    marian = transformers.MarianMTModel.from_pretrained(str(out)).eval()
    generator = torch.Generator().manual_seed(5)
    count, vocab = 100, tokenizers.source.vocab_size
    lengths = torch.randint(2, 12, (count,), generator=generator)
    src = torch.randint(EOS_ID + 2, vocab, (count, 12), generator=generator)
    src[torch.arange(count), lengths - 1] = EOS_ID
    mask = torch.arange(12).unsqueeze(0) < lengths.unsqueeze(1)
    src = src.masked_fill(~mask, PAD_ID)
    tgt_in = torch.cat([torch.full((count, 1), 2), src[:, :-1]], 1)
    with torch.no_grad():
        theirs = marian(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt_in).logits
        assert (model(src, mask, tgt_in) - theirs).abs().max() < 1e-4
    roundtrip = load_hf(out)
    lengths = set()
    for method, beams, penalty in SEARCHES:
        config = GenerateConfig(
            method=method,
            beam_size=beams,
            length_penalty=penalty,
            max_length_a=0.0,
            max_length_b=MAX_NEW,
            early_stopping=False,
        )
        ours = [n[0].tokens for n in generate_ids(model, src, mask, config)]
        exported = hf_generate(marian, src, mask, beams, penalty, EOS_ID)[:, 1:].tolist()
        assert ours == [strip(row, EOS_ID) for row in exported]
        adapter_src = src.masked_fill(~mask, roundtrip.pad_id)
        assert ours == [n[0].tokens for n in generate_ids(roundtrip, adapter_src, mask, config)]
        lengths.update(len(tokens) for tokens in ours)
    assert len(lengths) > 2
    marian_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    text = "alpha beta gamma kappa"
    assert marian_tokenizer(text).input_ids == [*tokenizers.source.encode(text), EOS_ID]


def test_export_refuses_what_marian_cannot_express(tmp_path: Path) -> None:
    seqsmith_model_dir(tmp_path / "pre", norm="pre", tie_output=False)
    with pytest.raises(SeqsmithError, match=r"model.norm='pre'.*model.tie_output"):
        export_marian(tmp_path / "pre", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    seqsmith_model_dir(tmp_path / "post", norm="post")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(SeqsmithError, match="exists already"):
        export_marian(tmp_path / "post", tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("scaled", [True, False])
def test_init_encoder_from_marian(tmp_path: Path, scaled: bool) -> None:
    torch.manual_seed(1)
    marian = transformers.MarianMTModel(
        transformers.MarianConfig(
            vocab_size=60, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
            activation_function="relu", scale_embedding=scaled, pad_token_id=PAD_ID, init_std=0.5,
        )
    ).eval()  # fmt: skip
    marian.save_pretrained(str(tmp_path / "marian"))
    config = config_from_dict(
        {
            "data": {"train": "unused"},
            "model": {"d_model": 32, "heads": 4, "ffn_dim": 64, "encoder_layers": 2, "decoder_layers": 1,
                      "norm": "post", "positions": "learned", "max_positions": 32},
        }
    )  # fmt: skip
    model = build_model(config.model, 60, 60)
    assert isinstance(model, TransformerModel)
    init_encoder_from_hf(model, tmp_path / "marian")
    model.eval()
    src = torch.randint(4, 60, (3, 9))
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[0, 6:] = False
    with torch.no_grad():
        reference = marian.get_encoder()(input_ids=src, attention_mask=mask.long())[0]
        states = model.encode(src, mask).states
    assert torch.allclose(states[mask], reference[mask], atol=1e-5)

    sinusoidal = build_model(config.model.model_copy(update={"positions": "sinusoidal"}), 60, 60)
    assert isinstance(sinusoidal, TransformerModel)
    with pytest.raises(SeqsmithError, match="model.positions: 'sinusoidal'"):
        init_encoder_from_hf(sinusoidal, tmp_path / "marian")


def test_adapter_is_a_seq2seq_model(tmp_path: Path) -> None:
    model = load_hf(tiny_hf("t5", tmp_path))
    assert isinstance(model, Seq2SeqModel) and not model.training
    assert (model.pad_id, model.bos_id, model.eos_id, model.decoder_start_id) == (VOCAB, VOCAB, 1, 0)


COPY_WORDS = [f"w{i}" for i in range(20)]


def tiny_marian_with_tokenizer(directory: Path) -> Path:
    """A random Marian and a word-level tokenizer that agree on the special ids (pad 0, eos 1)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.processors import TemplateProcessing

    words = ["<pad>", "</s>", "<unk>", *COPY_WORDS]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    backend.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    config = transformers.MarianConfig(
        vocab_size=len(words), d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, init_std=0.1, scale_embedding=True,
    )  # fmt: skip
    transformers.MarianMTModel(config).save_pretrained(str(directory))
    return directory


def test_seqsmith_train_fine_tunes_a_pretrained_model(tmp_path: Path) -> None:
    """prepare + train + load through the ordinary commands, with the model's own tokenizer and ids."""
    from seqsmith import api
    from seqsmith.data.binarize import BinarizedSplit
    from seqsmith.models.model_dir import load_model_dir
    from seqsmith.training.validation import split_loss

    pretrained = tiny_marian_with_tokenizer(tmp_path / "pretrained")
    rng = random.Random(0)
    for split, count in (("train", 600), ("dev", 60), ("test", 20)):
        lines = [" ".join(rng.choices(COPY_WORDS, k=rng.randint(2, 6))) for _ in range(count)]
        (tmp_path / f"{split}.tsv").write_text("".join(f"{line}\t{line}\n" for line in lines))
    config = config_from_dict(
        {
            "data": {
                **{split: str(tmp_path / f"{split}.tsv") for split in ("train", "dev", "test")},
                "format": "tsv",
                "output_dir": str(tmp_path / "data"),
            },
            "model": {"arch": "pretrained", "path": str(pretrained)},
            "train": {
                "model_dir": str(tmp_path / "model"),
                "lr": 3e-3,
                "schedule": "constant",
                "warmup_steps": 10,
                "early_stopping_metric": "loss",
                "batch_tokens": 256,
                "max_steps": 300,
                "max_epochs": None,
                "validate_every": 100,
                "checkpoint_every": 100,
                "threads": 1,
            },
            "generate": {"method": "greedy"},
        },
        "pretrained test config",
    )
    api.prepare(config, show_progress=False)
    dev = BinarizedSplit(tmp_path / "data", "dev")
    assert dev.source(0).tolist()[-1] == 1  # the tokenizer's own EOS ends every source
    before = split_loss(load_hf(pretrained), dev, 512)
    api.train(config, show_progress=False)
    shutil.rmtree(pretrained)  # the model directory must stand on its own
    loaded = load_model_dir(tmp_path / "model")
    after = split_loss(loaded.model, dev, 512)
    assert after < 0.5 * before, (before, after)
    texts = ["w1 w2 w3", "w7 w7 w4 w9", "w3 w12 w5 w0 w18 w2"]
    outputs = api.load(tmp_path / "model").generate(texts)
    assert outputs[0] == texts[0]
    tokenizer = loaded.tokenizers.source.tokenizer
    reference = loaded.model.hf.generate(
        **tokenizer(texts, return_tensors="pt", padding=True), num_beams=1, do_sample=False, max_new_tokens=30
    )
    assert outputs == tokenizer.batch_decode(reference, skip_special_tokens=True)


def test_training_starts_from_a_pretrained_encoder(tmp_path: Path) -> None:
    """The config option reaches the trainer's initial model: the encoder is Marian's, the rest is not."""
    from conftest import tiny_config

    from seqsmith import api
    from seqsmith.data.tokenizer import Tokenizers
    from seqsmith.models.initialize import initial_model

    torch.manual_seed(2)
    marian = transformers.MarianMTModel(
        transformers.MarianConfig(
            vocab_size=60, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
            activation_function="relu", pad_token_id=PAD_ID, init_std=0.5,
        )
    ).eval()  # fmt: skip
    marian.save_pretrained(str(tmp_path / "marian"))
    shape = {
        "d_model": 32,
        "heads": 4,
        "ffn_dim": 64,
        "encoder_layers": 2,
        "norm": "post",
        "positions": "learned",
    }
    config = tiny_config(
        tmp_path, model={**shape, "max_positions": 64, "init_encoder_from": str(tmp_path / "marian")}
    )
    api.prepare(config, show_progress=False)
    tokenizers = Tokenizers.load(Path(config.data.output_dir) / "tokenizer")
    model, notes = initial_model(config, tokenizers, None, fresh=True)
    assert isinstance(model, TransformerModel) and "Marian" in notes[0]
    encoder = marian.get_encoder()
    for mine, theirs in zip(model.encoder_layers, encoder.layers, strict=True):
        assert torch.equal(mine.ffn[0].weight, theirs.fc1.weight)
        assert torch.equal(mine.norm2.weight, theirs.final_layer_norm.weight)
    assert torch.equal(model.source_positions.table, encoder.embed_positions.weight)
    decoder_weight = marian.get_decoder().layers[0].fc1.weight
    assert not torch.equal(model.decoder_layers[0].ffn[0].weight, decoder_weight)  # the decoder is fresh
