"""RNN, Transformer and convolutional models: teacher forcing agrees with step-by-step decoding, padding
and beam reordering change nothing they should not, and tiny models learn to copy."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from seqsmith.config import ConvConfig, RNNConfig, TransformerConfig
from seqsmith.errors import SeqsmithError
from seqsmith.models.build import build_model, describe
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.rnn import RNNModel
from seqsmith.models.transformer import TransformerModel, TransformerState
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID

VOCAB = 17
SMALL_RNN: dict[str, Any] = {"embed_dim": 12, "hidden_dim": 16, "encoder_layers": 2, "decoder_layers": 2}
SMALL_TRANSFORMER: dict[str, Any] = {
    "d_model": 16,
    "heads": 4,
    "ffn_dim": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "max_positions": 64,
}

RNN_CONFIGS = [
    RNNConfig(cell=cell, attention=attention, input_feeding=feeding, **SMALL_RNN)
    for cell in ("gru", "lstm")
    for attention in ("bahdanau", "luong_dot", "luong_general")
    for feeding in (True, False)
] + [
    RNNConfig(bidirectional=False, share_embeddings=True, tie_output=True, **SMALL_RNN),
    RNNConfig(cell="lstm", share_embeddings=True, tie_output=True, **{**SMALL_RNN, "decoder_layers": 1}),
    RNNConfig(pointer_generator=True, coverage=True, share_embeddings=True, **SMALL_RNN),
    RNNConfig(
        pointer_generator=True, cell="lstm", attention="luong_general", input_feeding=False, **SMALL_RNN
    ),
    RNNConfig(coverage=True, attention="luong_dot", **SMALL_RNN),
]
TRANSFORMER_CONFIGS = [
    TransformerConfig(norm=norm, positions=positions, **SMALL_TRANSFORMER)
    for norm in ("pre", "post")
    for positions in ("sinusoidal", "learned")
] + [
    TransformerConfig(activation="gelu", share_embeddings=False, tie_output=False, **SMALL_TRANSFORMER),
    TransformerConfig(share_embeddings=False, tie_output=True, **{**SMALL_TRANSFORMER, "decoder_layers": 1}),
]
SMALL_CONV: dict[str, Any] = {"embed_dim": 12, "encoder_layers": 2, "decoder_layers": 2, "max_positions": 64}
CONV_CONFIGS = [
    ConvConfig(encoder_channels=16, decoder_channels=16, **SMALL_CONV),
    ConvConfig(
        encoder_channels=[16, 24],
        decoder_channels=[24, 8],
        encoder_kernels=[5, 1],
        decoder_kernels=[2, 4],
        weight_norm=False,
        share_embeddings=True,
        tie_output=True,
        **SMALL_CONV,
    ),
]
CONFIGS = RNN_CONFIGS + TRANSFORMER_CONFIGS + CONV_CONFIGS


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _name(config: RNNConfig | TransformerConfig | ConvConfig | ConvConfig) -> str:
    if isinstance(config, ConvConfig):
        return f"conv-{config.decoder_kernels}-wn{int(config.weight_norm)}"
    if isinstance(config, RNNConfig):
        extras = "-pg" * config.pointer_generator + "-cov" * config.coverage + f"-tie{int(config.tie_output)}"
        return f"{config.cell}-{config.attention}-feed{int(config.input_feeding)}{extras}"
    return f"{config.norm}-{config.positions}-{config.activation}-tie{int(config.tie_output)}"


def _model(config: RNNConfig | TransformerConfig | ConvConfig, seed: int = 0) -> Seq2SeqModel:
    torch.manual_seed(seed)
    return build_model(config, VOCAB, VOCAB).eval()


def _batch(lengths: list[int], seed: int, pad_to: int | None = None) -> tuple[Tensor, Tensor]:
    """Right-padded random ids (no specials) and the mask of real tokens."""
    generator = torch.Generator().manual_seed(seed)
    width = pad_to or max(lengths)
    ids = torch.randint(4, VOCAB, (len(lengths), width), generator=generator)
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return ids.masked_fill(~mask, PAD_ID), mask


def _decode(
    model: Seq2SeqModel, src: Tensor, mask: Tensor, tgt_in: Tensor, need_attention: bool = True
) -> tuple[Tensor, list[Any]]:
    """Step-by-step log-probs (batch, steps, vocab) and the state after each step."""
    memory, state, steps, states = model.encode(src, mask), None, [], []
    for t in range(tgt_in.size(1)):
        log_probs, state = model.decode_step(tgt_in[:, t], memory, state, need_attention)
        steps.append(log_probs)
        states.append(state)
    return torch.stack(steps, dim=1), states


@pytest.mark.parametrize("config", CONFIGS, ids=_name)
def test_forward_equals_step_by_step(config: RNNConfig | TransformerConfig | ConvConfig) -> None:
    model = _model(config)
    src, mask = _batch([7, 4, 1], seed=1)
    tgt_in, _ = _batch([6, 6, 6], seed=2)
    with torch.no_grad():
        scores = model(src, mask, tgt_in)
        stepped, states = _decode(model, src, mask, tgt_in)
    assert scores.shape == (3, 6, VOCAB) and model.output_size == VOCAB
    assert stepped.dtype == torch.float32
    assert torch.allclose(F.log_softmax(scores, dim=-1), stepped, atol=1e-5)
    for state in states:
        attention = model.step_attention(state)
        assert attention is not None and attention.shape == (3, 7)
        assert torch.allclose(attention.sum(-1), torch.ones(3), atol=1e-6)
        assert torch.equal(attention.masked_select(~mask), torch.zeros(int((~mask).sum())))


@pytest.mark.parametrize("config", CONFIGS, ids=_name)
def test_padding_changes_nothing(config: RNNConfig | TransformerConfig | ConvConfig) -> None:
    """A sentence decodes the same alone and next to longer sources and targets."""
    model = _model(config)
    src, mask = _batch([5, 9], seed=3)
    tgt_in, _ = _batch([4, 8], seed=4)
    with torch.no_grad():
        together = F.log_softmax(model(src, mask, tgt_in), dim=-1)[0, :4]
        alone = F.log_softmax(model(src[:1, :5], mask[:1, :5], tgt_in[:1, :4]), dim=-1)[0]
        stepped, _ = _decode(model, src, mask, tgt_in[:, :4])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(stepped[0], alone, atol=1e-5)


@pytest.mark.parametrize("picked", [[2, 0, 0, 3, 1], [2, 0, 0, 1], [0, 3, 2]], ids=["more", "same", "fewer"])
@pytest.mark.parametrize("method", ["select", "reorder"])
@pytest.mark.parametrize("config", CONFIGS, ids=_name)
def test_select_follows_rows(
    config: RNNConfig | TransformerConfig | ConvConfig, method: str, picked: list[int]
) -> None:
    """Decode 3 steps, permute (and duplicate/drop) rows of state and memory, decode on: each row
    continues exactly as its source row would have, whether the state is copied (select) or reordered
    (in place where the model can)."""
    model = _model(config)
    src, mask = _batch([6, 3, 5, 2], seed=5)
    tgt_in, _ = _batch([7, 7, 7, 7], seed=6)
    with torch.no_grad():
        reference, _ = _decode(model, src, mask, tgt_in)
        memory = model.encode(src, mask)
        _, state = model.decode_step(tgt_in[:, 0], memory, None)
        for t in range(1, 3):
            _, state = model.decode_step(tgt_in[:, t], memory, state)
        rows = torch.tensor(picked)
        memory, state = memory.select(rows), getattr(state, method)(rows)
        for t in range(3, 7):
            log_probs, state = model.decode_step(tgt_in[rows, t], memory, state)
            assert torch.allclose(log_probs, reference[rows, t], atol=1e-5)


def test_transformer_reorders_in_place_only_when_no_other_state_reads_its_buffer() -> None:
    """``reorder`` moves rows within the state's own buffer when it alone holds it; while an older state
    still reads the buffer it copies, and both routes decode on exactly."""
    model = _model(TRANSFORMER_CONFIGS[0])
    src, mask = _batch([6, 3, 5, 2], seed=5)
    tgt_in, _ = _batch([7, 7, 7, 7], seed=6)
    rows = torch.tensor([0, 3, 2])
    with torch.no_grad():
        reference, _ = _decode(model, src, mask, tgt_in)
        memory = model.encode(src, mask)
        _, older = model.decode_step(tgt_in[:, 0], memory, None)
        _, state = model.decode_step(tgt_in[:, 1], memory, older)
        copied = state.reorder(rows)
        assert isinstance(state, TransformerState) and isinstance(copied, TransformerState)
        assert copied.cache is not state.cache
        del older
        moved = state.reorder(rows)
        assert isinstance(moved, TransformerState) and moved.cache is state.cache
        del state
        memory = memory.select(rows)
        for decoded in (copied, moved):
            for t in range(2, 7):
                log_probs, decoded = model.decode_step(tgt_in[rows, t], memory, decoded)
                assert torch.allclose(log_probs, reference[rows, t], atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=_name)
def test_repeated_rows_decode_like_their_sentence(config: RNNConfig | TransformerConfig | ConvConfig) -> None:
    """memory.repeat_rows (beams; the Transformer shares a sentence's cross-attention memory among them),
    then dropping whole sentences, then single rows: every row still decodes as its sentence."""
    model = _model(config)
    src, mask = _batch([6, 3, 5, 2], seed=5)
    tgt_in, _ = _batch([7, 7, 7, 7], seed=6)
    with torch.no_grad():
        reference, _ = _decode(model, src, mask, tgt_in)
        memory, state = model.encode(src, mask).repeat_rows(2), None
        sentence = torch.arange(4).repeat_interleave(2)
        for t, rows in enumerate([None, torch.tensor([2, 3, 6, 7]), torch.tensor([3, 0, 0])]):
            if rows is not None:
                memory, state, sentence = memory.select(rows), state.select(rows), sentence[rows]
            log_probs, state = model.decode_step(tgt_in[sentence, t], memory, state, True)
            assert torch.allclose(log_probs, reference[sentence, t], atol=1e-5)
            attention = model.step_attention(state)
            assert attention is not None and attention.shape == (sentence.numel(), 6)


def test_transformer_state_can_be_decoded_twice_and_grows_past_its_buffer() -> None:
    """A step appends to a shared buffer; decoding again from an older state must not corrupt newer
    ones, and targets longer than the first buffer (32 steps) must still match teacher forcing."""
    model = _model(TRANSFORMER_CONFIGS[0])
    src, mask = _batch([5, 3], seed=7)
    tgt_in, _ = _batch([40, 40], seed=8)
    with torch.no_grad():
        reference = F.log_softmax(model(src, mask, tgt_in), dim=-1)
        stepped, states = _decode(model, src, mask, tgt_in)
        assert torch.allclose(stepped, reference, atol=1e-5)
        memory = model.encode(src, mask)
        old = states[9]  # already extended once: must copy, not overwrite states[10]'s column
        other = torch.full((2,), 5)
        branch, _ = model.decode_step(other, memory, old)
        after, _ = model.decode_step(tgt_in[:, 11], memory, states[10])
    assert torch.allclose(after, reference[:, 11], atol=1e-5)
    expected = F.log_softmax(model(src, mask, torch.cat([tgt_in[:, :10], other[:, None]], 1)), -1)[:, -1]
    assert torch.allclose(branch, expected, atol=1e-5)


def test_transformer_attention_only_on_request() -> None:
    model = _model(TRANSFORMER_CONFIGS[0])
    assert isinstance(model, TransformerModel)
    src, mask = _batch([4, 2], seed=9)
    _, states = _decode(model, src, mask, torch.full((2, 2), BOS_ID), need_attention=False)
    assert model.step_attention(states[-1]) is None
    _, states = _decode(model, src, mask, torch.full((2, 2), BOS_ID))
    state = states[-1]
    assert isinstance(state, TransformerState) and state.head_attention is not None
    assert state.head_attention.shape == (2, 4, 4)
    attention, picked = model.step_attention(state), state.select(torch.tensor([1])).head_attention
    assert attention is not None and picked is not None
    assert torch.allclose(state.head_attention.mean(1), attention)
    assert torch.allclose(picked, state.head_attention[1:])


@pytest.mark.parametrize(
    "config", [RNN_CONFIGS[0], RNN_CONFIGS[-3], TRANSFORMER_CONFIGS[0], *CONV_CONFIGS], ids=_name
)
def test_forward_trains_through_every_parameter(config: RNNConfig | TransformerConfig | ConvConfig) -> None:
    model = _model(config).train()
    src, mask = _batch([5, 3], seed=10)
    tgt_in, _ = _batch([4, 4], seed=11)
    total = model(src, mask, tgt_in).sum()
    extra = model.auxiliary_loss()
    (total if extra is None else total + extra).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_fresh_transformer_predicts_near_uniform() -> None:
    """Stable initialization: the first loss is close to log(vocab) rather than exploding."""
    torch.manual_seed(0)
    config = TransformerConfig(
        d_model=64, heads=4, ffn_dim=128, encoder_layers=3, decoder_layers=3, dropout=0.0
    )
    model = build_model(config, 1000, 1000)
    src, mask = _batch([12] * 8, seed=12)
    tgt_in, tgt_out = torch.randint(4, 1000, (2, 8, 10))
    loss = F.cross_entropy(model(src, mask, tgt_in).flatten(0, 1), tgt_out.flatten())
    assert abs(loss.item() - math.log(1000)) < 0.15 * math.log(1000)


def test_same_seed_same_weights() -> None:
    first, second = _model(TRANSFORMER_CONFIGS[0], seed=4), _model(TRANSFORMER_CONFIGS[0], seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def _copy_batch(generator: torch.Generator, size: int = 32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random 3-6 symbol sources (+EOS); the target is the same sequence."""
    lengths = torch.randint(3, 7, (size,), generator=generator)
    width = int(lengths.max()) + 1
    ids = torch.randint(4, 12, (size, width), generator=generator)
    positions = torch.arange(width).unsqueeze(0)
    ids = torch.where(positions == lengths.unsqueeze(1), EOS_ID, ids).masked_fill(
        positions > lengths[:, None], 0
    )
    mask = ids != PAD_ID
    tgt_in = torch.cat([torch.full((size, 1), BOS_ID), ids[:, :-1]], dim=1).masked_fill(~mask, PAD_ID)
    return ids, mask, tgt_in, ids


@pytest.mark.parametrize(
    ("config", "lr"),
    [
        (RNNConfig(embed_dim=32, hidden_dim=64, dropout=0.0), 1e-2),
        (
            RNNConfig(
                embed_dim=32, hidden_dim=64, dropout=0.0, pointer_generator=True, share_embeddings=True
            ),
            1e-2,
        ),
        (
            TransformerConfig(
                d_model=32, heads=2, ffn_dim=64, encoder_layers=2, decoder_layers=2, dropout=0.0
            ),
            3e-3,
        ),
        (ConvConfig(embed_dim=32, encoder_channels=64, decoder_channels=64, dropout=0.0), 3e-3),
    ],
    ids=["rnn", "pointer-generator", "transformer", "conv"],
)
def test_tiny_model_learns_to_copy(config: RNNConfig | TransformerConfig | ConvConfig, lr: float) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(config, 12, 12)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(300):
        src, mask, tgt_in, tgt_out = _copy_batch(generator)
        scores = model(src, mask, tgt_in)
        loss = F.cross_entropy(scores.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.5
    assert sum(losses[-20:]) / 20 < 0.15


def test_build_refuses_impossible_models() -> None:
    with pytest.raises(SeqsmithError, match="share_embeddings.*8000.*7000"):
        build_model(TransformerConfig(share_embeddings=True), 8000, 7000)
    with pytest.raises(SeqsmithError, match="pointer_generator copies source ids"):
        build_model(RNNConfig(pointer_generator=True), 100, 90)
    with pytest.raises(SeqsmithError, match="hidden_dim=15 must be even"):
        build_model(RNNConfig(hidden_dim=15), 100, 100)
    with pytest.raises(SeqsmithError, match="target vocabulary has 3 entries"):
        build_model(RNNConfig(), 100, 3)
    model = build_model(TransformerConfig(**{**SMALL_TRANSFORMER, "max_positions": 16}), 20, 20)
    src, mask = _batch([17], seed=0)
    with pytest.raises(SeqsmithError, match=r"17 tokens exceeds model.max_positions=16"):
        model.encode(src, mask)


def test_sharing_and_description(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="seqsmith.models.build"):
        model = build_model(TransformerConfig(**SMALL_TRANSFORMER), VOCAB, VOCAB)
    assert isinstance(model, TransformerModel)
    assert model.source_embedding is model.target_embedding
    assert model.output.weight is model.target_embedding.weight
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert f"{unique:,} parameters" in describe(model)
    assert describe(model) in caplog.text
    untied = build_model(
        TransformerConfig(share_embeddings=False, tie_output=False, **SMALL_TRANSFORMER), 20, 30
    )
    assert untied.num_parameters() == unique + 20 * 16 + 30 * 16 - VOCAB * 16 + 30 * 16
    rnn = build_model(RNNConfig(share_embeddings=True, tie_output=True, **SMALL_RNN), VOCAB, VOCAB)
    assert isinstance(rnn, RNNModel) and rnn.output.weight is rnn.source_embedding.weight
    assert describe(rnn).startswith("gru bidirectional layers=2+2")
