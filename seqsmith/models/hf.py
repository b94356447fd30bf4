"""Pretrained Hugging Face encoder-decoders (Marian, T5, BART, ...) behind seqsmith's model interface.

``load_hf(directory)`` wraps an ``AutoModelForSeq2SeqLM`` read from a local directory (never the hub,
never code from the directory), so every seqsmith search, objective and picture works with it.

Special ids. Search starts every output with ``model.bos_id``, pads sources with ``model.pad_id`` and
forbids both as outputs. HF models disagree with that: BART starts decoding with its EOS, T5 and BART
never forbid their pad token. So the adapter's ``pad_id`` and ``bos_id`` are one virtual "start" id just
past HF's vocabulary: ``decode_step`` returns ``vocab + 1`` log-probabilities with the start id at -inf,
and the adapter maps the start id to HF's ``decoder_start_token_id`` (decoder inputs) or pad token
(sources). What HF's ``generate`` forbids by default (single-token ``bad_words_ids``, as Marian sets for
its pad token, and ``suppress_tokens``) and a ``forced_bos_token_id`` are applied in ``decode_step``, the
way HF's logits processors do after the log-softmax, so outputs and scores agree with ``generate``.

Decoding state. ``encode`` runs the encoder and one decoder step (BOS only) to let HF fill its
cross-attention cache, and keeps those keys/values in the memory: they are reordered only when search
drops sentences, not at every beam step. The state holds the self-attention keys/values; each step wraps
both in an ``EncoderDecoderCache`` without copying them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from seqsmith.data.hf_tokenizer import SAVED, import_transformers
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_directory
from seqsmith.models.interface import Memory, Reorderable, Seq2SeqModel


@dataclasses.dataclass
class HFMemory(Memory):
    """Encoder output plus every decoder layer's cross-attention keys/values (rows, heads, src_len, dim)."""

    cross_keys: list[Tensor]
    cross_values: list[Tensor]


@dataclasses.dataclass
class HFState(Reorderable):
    """Self-attention keys/values of every decoder layer: (rows, heads, steps, head_dim)."""

    keys: list[Tensor]
    values: list[Tensor]


def _cache(keys: Sequence[Tensor], values: Sequence[Tensor]) -> Any:
    """A ``DynamicCache`` holding these tensors as they are (building it from data would copy them)."""
    cache_utils = import_transformers().cache_utils
    cache = cache_utils.DynamicCache()
    for key, value in zip(keys, values):
        layer = cache_utils.DynamicLayer()
        layer.lazy_initialization(key, value)
        layer.keys, layer.values = key, value
        cache.layers.append(layer)
    return cache


def _generation_ids(hf_model: Any, directory: Path) -> tuple[int, int, list[int], int | None]:
    """(decoder start, eos, ids HF forbids at every step, forced first token) from the model's settings."""
    config, generation = hf_model.config, hf_model.generation_config
    source = directory / "generation_config.json"
    start = generation.decoder_start_token_id
    if start is None:
        start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = generation.bos_token_id
    eos = generation.eos_token_id
    if isinstance(eos, list):
        if len(eos) != 1:
            raise SeqsmithError(
                f"{source}: eos_token_id={eos} lists several end tokens; seqsmith search ends outputs at "
                "one: set eos_token_id to a single id"
            )
        eos = eos[0]
    if start is None or eos is None:
        raise SeqsmithError(
            f"{directory}: the model names no decoder_start_token_id (or bos_token_id) and eos_token_id; "
            "add them to config.json"
        )
    forbidden = list(generation.suppress_tokens or [])
    for words in generation.bad_words_ids or []:
        if len(words) != 1:
            raise SeqsmithError(
                f"{source}: bad_words_ids entry {words} has several tokens; seqsmith forbids single "
                "tokens only: remove the entry or split it"
            )
        forbidden.append(words[0])
    return int(start), int(eos), sorted(set(forbidden)), generation.forced_bos_token_id


class HFSeq2Seq(Seq2SeqModel):
    """A transformers encoder-decoder (``hf``) speaking seqsmith's encode / decode_step / forward."""

    def __init__(self, hf_model: Any, directory: Path = Path(".")) -> None:
        super().__init__()
        self.hf = hf_model
        self.vocab_size = int(hf_model.get_output_embeddings().weight.size(0))
        self.pad_id = self.bos_id = self.vocab_size  # the virtual start id, see the module docstring
        self.decoder_start_id, self.eos_id, forbidden, forced_bos = _generation_ids(hf_model, directory)
        pad = hf_model.config.pad_token_id
        self.hf_pad_id = int(self.eos_id if pad is None else pad)  # only fills masked source positions
        self.forced_bos_id = None if forced_bos is None else int(forced_bos)
        bias = torch.zeros(self.vocab_size + 1)
        bias[[*forbidden, self.vocab_size]] = float("-inf")
        self.step_bias: Tensor
        self.register_buffer("step_bias", bias, persistent=False)

    # HF models name and tie their embeddings each their own way: init_from copies them by name and shape
    vocabulary_rows: ClassVar[dict[str, str]] = {}
    encoder_prefixes = ("hf.model.encoder.",)

    def shape(self) -> str:
        return f"pretrained {self.hf.config.model_type}"

    @property
    def output_size(self) -> int:
        return self.vocab_size + 1

    @property
    def width(self) -> int:
        return int(getattr(self.hf.config, "d_model", 512))

    @property
    def max_output_length(self) -> int:
        positions = getattr(self.hf.config, "max_position_embeddings", None)  # T5 has none: relative
        return super().max_output_length if positions is None else int(positions) - 1

    def save_architecture(self, directory: Path) -> None:
        save_architecture(self, directory)

    def _hf_source(self, src: Tensor, src_mask: Tensor) -> Tensor:
        return src.masked_fill(~src_mask, self.hf_pad_id)

    def _hf_target(self, tgt: Tensor) -> Tensor:
        return tgt.masked_fill(tgt == self.bos_id, self.decoder_start_id)

    def encode(self, src: Tensor, src_mask: Tensor) -> HFMemory:
        mask = src_mask.long()
        states = self.hf.get_encoder()(input_ids=self._hf_source(src, src_mask), attention_mask=mask)[0]
        cache = import_transformers().EncoderDecoderCache(_cache([], []), _cache([], []))
        start = torch.full((src.size(0), 1), self.decoder_start_id, dtype=torch.long, device=src.device)
        self.hf.get_decoder()(
            input_ids=start,
            encoder_hidden_states=states,
            encoder_attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
        )
        layers = cache.cross_attention_cache.layers
        return HFMemory(
            states, src_mask, [layer.keys for layer in layers], [layer.values for layer in layers]
        )

    @torch.no_grad()
    def decode_step(
        self, prev_ids: Tensor, memory: Memory, state: Any | None, need_attention: bool = False
    ) -> tuple[Tensor, HFState]:
        """One step without autograd (search never needs gradients; train through ``forward``); HF's
        attention weights are not exposed."""
        if not isinstance(memory, HFMemory):
            raise TypeError("HFSeq2Seq.decode_step needs the memory of HFSeq2Seq.encode")
        own = _cache([], []) if state is None else _cache(state.keys, state.values)
        cache = import_transformers().EncoderDecoderCache(own, _cache(memory.cross_keys, memory.cross_values))
        logits = self.hf(
            encoder_outputs=(memory.states,),
            attention_mask=memory.mask.long(),
            decoder_input_ids=self._hf_target(prev_ids).unsqueeze(1),
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1]
        log_probs = F.pad(F.log_softmax(logits.float(), dim=-1), (0, 1)) + self.step_bias
        if state is None and self.forced_bos_id is not None:  # HF gives the forced token score 0
            log_probs = torch.full_like(log_probs, float("-inf"))
            log_probs[:, self.forced_bos_id] = 0.0
        layers = cache.self_attention_cache.layers
        return log_probs, HFState([layer.keys for layer in layers], [layer.values for layer in layers])

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """HF's logits (batch, tgt_len, vocab): the virtual start id has no column here."""
        return self.hf(
            input_ids=self._hf_source(src, src_mask),
            attention_mask=src_mask.long(),
            decoder_input_ids=self._hf_target(tgt_in),
            use_cache=False,
        ).logits


def _check_directory(directory: Path) -> None:
    """A SeqsmithError saying what is wrong unless ``directory`` holds an HF encoder-decoder config."""
    path = directory / "config.json"
    if not directory.is_dir():
        raise SeqsmithError(f"Hugging Face model directory {directory} not found")
    if not path.is_file():
        raise SeqsmithError(
            f"{directory} is not a Hugging Face model directory: config.json is missing "
            "(save one with model.save_pretrained(directory))"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SeqsmithError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(raw, dict) or not raw.get("is_encoder_decoder"):
        kind = raw.get("model_type") if isinstance(raw, dict) else None
        raise SeqsmithError(
            f"{path}: model_type {kind!r} is not an encoder-decoder (is_encoder_decoder is not true); "
            "seqsmith loads sequence-to-sequence models such as Marian, T5 or BART"
        )


def load_hf(directory: str | Path) -> HFSeq2Seq:
    """A local ``AutoModelForSeq2SeqLM`` directory as a seqsmith model, in eval mode."""
    directory = Path(directory)
    transformers = import_transformers()
    _check_directory(directory)
    try:
        hf_model = transformers.AutoModelForSeq2SeqLM.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise SeqsmithError(
            f"{directory}: transformers could not load a sequence-to-sequence model ({str(error)[:300]})"
        ) from None
    return HFSeq2Seq(hf_model, directory).eval()


def save_architecture(model: HFSeq2Seq, directory: Path) -> None:
    """HF's config and generation config in ``directory/hf``: what rebuilds the model around the weights
    that seqsmith saves, without the directory it was fine-tuned from."""
    target = Path(directory) / SAVED
    if target.is_dir():
        return
    with atomic_directory(target) as temporary:
        model.hf.config.save_pretrained(str(temporary))
        model.hf.generation_config.save_pretrained(str(temporary))


def load_architecture(directory: Path) -> HFSeq2Seq:
    """The model ``save_architecture`` described, with fresh weights: load seqsmith's weights next."""
    directory = Path(directory) / SAVED
    transformers = import_transformers()
    _check_directory(directory)
    config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    return HFSeq2Seq(transformers.AutoModelForSeq2SeqLM.from_config(config), directory).eval()
