"""The Transformer's copying (model.copy_source) against references built another way: with the gate shut
the distribution is the step-by-step attention on the source ids, with it open the same weights' plain
softmax, and step-by-step decoding equals the teacher-forced pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from seqsmith import api
from seqsmith.config import TransformerConfig, config_from_dict
from seqsmith.errors import SeqsmithError
from seqsmith.models.build import build_model
from seqsmith.models.transformer import TransformerModel

VOCAB = 23
SRC = torch.tensor([[5, 6, 7, 6, 3], [9, 8, 3, 0, 0]])
TGT_IN = torch.tensor([[2, 6, 7, 5], [2, 9, 9, 8]])


def model(**options: object) -> TransformerModel:
    torch.manual_seed(0)
    config = TransformerConfig(
        d_model=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2, dropout=0.0
    )
    built = build_model(config.model_copy(update={"copy_source": True, **options}), VOCAB, VOCAB)
    assert isinstance(built, TransformerModel)
    return built.eval()


def gate(copy: TransformerModel, bias: float) -> None:
    with torch.no_grad():
        copy.copy_gate.weight.zero_()
        copy.copy_gate.bias.fill_(bias)


def test_a_shut_gate_gives_the_attention_on_the_source_ids() -> None:
    copy = model()
    gate(copy, -60.0)  # p_gen ~ 1e-26
    probs = copy(SRC, SRC != 0, TGT_IN).exp()
    attention = copy.teacher_forced_attention(SRC, SRC != 0, TGT_IN)  # decode_step's, last layer
    assert attention is not None
    expected = torch.zeros(2, TGT_IN.size(1), VOCAB)
    for b in range(2):
        for i, token in enumerate(SRC[b].tolist()):
            expected[b, :, token] += attention[b, :, i]
    assert torch.allclose(probs, expected, atol=1e-5)
    assert torch.allclose(probs.sum(-1), torch.ones(2, TGT_IN.size(1)), atol=1e-5)


def test_an_open_gate_gives_the_plain_models_softmax() -> None:
    copy = model()
    gate(copy, 60.0)
    plain = build_model(copy.config.model_copy(update={"copy_source": False}), VOCAB, VOCAB).eval()
    missing = plain.load_state_dict(copy.state_dict(), strict=False)
    assert missing.unexpected_keys == ["copy_gate.weight", "copy_gate.bias"] and not missing.missing_keys
    expected = torch.log_softmax(plain(SRC, SRC != 0, TGT_IN), -1)
    assert torch.allclose(copy(SRC, SRC != 0, TGT_IN), expected, atol=1e-5)


def test_steps_equal_the_teacher_forced_pass_with_beams() -> None:
    copy = model()
    teacher = copy(SRC, SRC != 0, TGT_IN)
    memory = copy.encode(SRC, SRC != 0).repeat_rows(3)  # three beams a sentence, sharing the source
    state, steps = None, []
    for t in range(TGT_IN.size(1)):
        log_probs, state = copy.decode_step(TGT_IN[:, t].repeat_interleave(3), memory, state)
        steps.append(log_probs.view(2, 3, -1)[:, 1])
    assert torch.allclose(torch.stack(steps, 1), teacher, atol=1e-5)


def test_a_copy_model_trains_searches_and_refuses_export(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, model={"copy_source": True}, train={"max_steps": 60})
    api.train(config, show_progress=False)
    generator = api.load(config.train.model_dir)
    texts = ["alpha beta gamma", "delta eps"]
    assert generator.generate(texts, method="beam", beam_size=1) == generator.generate(texts)
    assert len(generator.generate_full(texts, beam=3, nbest=3)[0]) == 3
    assert len(generator.generate(texts, method="sample", seed=3)) == 2
    for fmt in ("ctranslate2", "onnx"):
        with pytest.raises(
            SeqsmithError, match=r"cannot express copying from the source \(model.copy_source"
        ):
            api.export(config.train.model_dir, tmp_path / fmt, fmt)
    raw = config.model_dump(mode="json")
    raw["data"]["tokenizer"]["joint"] = False
    raw["model"]["share_embeddings"] = raw["model"]["tie_output"] = False
    with pytest.raises(SeqsmithError, match="model.copy_source lands on source ids in the output"):
        config_from_dict(raw, "test")
