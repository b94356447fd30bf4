"""Export a seqsmith Transformer as a Marian (``MarianMTModel``) directory of Hugging Face's.

``export_marian`` writes a seqsmith model directory as a Marian directory that transformers loads with
identical logits, through the name map of ``seqsmith.models.marian`` (which also starts a seqsmith
encoder from a pretrained Marian one).

Marian is a post-norm Transformer with shared, tied, sqrt(d)-scaled embeddings and a fixed sinusoidal
table laid out like seqsmith's (sines in the first half of the features, cosines in the second). The
frequencies differ: Marian uses 10000^(-2i/d), seqsmith 10000^(-i/(d/2 - 1)). transformers recomputes
Marian's table unless the checkpoint holds one, so the export writes seqsmith's table into
model.safetensors and checks the reloaded model's logits. A caveat that follows: ``save_pretrained``
of the loaded model drops the table again (Marian lists it in ``_keys_to_ignore_on_save``), and other
Marian runtimes (Marian C++, CTranslate2's Marian converter) always use their own: for CTranslate2,
``seqsmith export --format ctranslate2`` (``seqsmith.models.ctranslate2_export``) writes seqsmith's table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from seqsmith.config import TransformerConfig
from seqsmith.data.hf_tokenizer import import_transformers
from seqsmith.data.tokenizer import SentencePieceTokenizer, Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_directory
from seqsmith.models.marian import decoder_entries, encoder_entries, row_block
from seqsmith.models.model_dir import TOKENIZER, load_model_dir
from seqsmith.models.transformer import TransformerModel
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID

logger = logging.getLogger(__name__)


def _unsupported(config: TransformerConfig) -> list[str]:
    """The options of ``config`` Marian cannot express, each with the setting it needs."""
    needs = [
        (config.norm == "post", f"model.norm={config.norm!r} (Marian is post-norm: needs 'post')"),
        (
            config.positions == "sinusoidal",
            f"model.positions={config.positions!r} (Marian has a fixed sinusoidal table: needs 'sinusoidal')",
        ),
        (config.share_embeddings, "model.share_embeddings=false (Marian shares them: needs true)"),
        (config.tie_output, "model.tie_output=false (Marian ties the output projection: needs true)"),
        (not config.segment_embeddings, "model.segment_embeddings=true (Marian has none: needs false)"),
        (config.knowledge_field is None, "model.knowledge_field (Marian has one encoder: needs none)"),
        (not config.copy_source, "model.copy_source=true (Marian does not copy: needs false)"),
    ]
    return [message for ok, message in needs if not ok]


def marian_config(config: TransformerConfig, vocab_size: int) -> Any:
    """The ``MarianConfig`` of a seqsmith Transformer config (ids are seqsmith's PAD/BOS/EOS)."""
    transformers = import_transformers()
    return transformers.MarianConfig(
        vocab_size=vocab_size,
        decoder_vocab_size=vocab_size,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.heads,
        decoder_attention_heads=config.heads,
        encoder_ffn_dim=config.ffn_dim,
        decoder_ffn_dim=config.ffn_dim,
        activation_function=config.activation,
        max_position_embeddings=config.max_positions,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=0.0,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        decoder_start_token_id=BOS_ID,
        forced_eos_token_id=EOS_ID,
    )


def _marian_state(model: TransformerModel) -> dict[str, Tensor]:
    config, ours = model.config, model.state_dict()
    state = {
        theirs: row_block(ours[mine], part, parts).clone()
        for theirs, mine, part, parts in encoder_entries(config) + decoder_entries(config)
    }
    embedding = model.source_embedding.weight.detach().clone()
    for name in ("model.shared", "model.encoder.embed_tokens", "model.decoder.embed_tokens", "lm_head"):
        state[f"{name}.weight"] = embedding
    state["final_logits_bias"] = torch.zeros(1, embedding.size(0))
    return state


def export_marian(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the seqsmith Transformer in ``model_dir`` as a MarianMTModel directory ``out_dir`` (new).

    The directory appears only once complete; the reloaded model's logits are checked against seqsmith's
    (atol 1e-4) before it does. Its generation_config forbids PAD and BOS, as seqsmith's search does.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    transformers = import_transformers()
    if out_dir.exists():
        raise SeqsmithError(f"{out_dir} exists already; choose a new directory for the Marian export")
    loaded = load_model_dir(model_dir)
    model = loaded.model
    if not isinstance(model, TransformerModel):
        raise SeqsmithError(
            f"{model_dir}: only Transformer models export to Marian (model.arch: transformer)"
        )
    problems = _unsupported(model.config)
    if problems:
        raise SeqsmithError(
            f"{model_dir}/config.json: Marian cannot express " + "; ".join(problems) + ". Train a model "
            "with these settings to export it"
        )
    hf_model = transformers.MarianMTModel(marian_config(model.config, model.target_vocab_size)).eval()
    result = hf_model.load_state_dict(_marian_state(model), strict=False)
    missing = [name for name in result.missing_keys if not name.endswith("embed_positions.weight")]
    if missing or result.unexpected_keys:  # the name map no longer matches transformers' Marian
        raise SeqsmithError(
            f"transformers {transformers.__version__} names Marian's weights differently (missing "
            f"{missing[:3]}, unexpected {result.unexpected_keys[:3]}); export needs a supported release"
        )
    hf_model.generation_config.bad_words_ids = [[PAD_ID], [BOS_ID]]
    with atomic_directory(out_dir) as temporary:
        hf_model.save_pretrained(str(temporary))
        weights = temporary / "model.safetensors"
        state = load_file(str(weights))
        for side in ("encoder", "decoder"):
            state[f"model.{side}.embed_positions.weight"] = model.source_positions.table.detach().clone()
        save_file(state, str(weights), metadata={"format": "pt"})
        _export_tokenizer(model_dir / TOKENIZER, temporary)
        _check_logits(model, temporary)
    return out_dir


def _check_logits(model: TransformerModel, directory: Path) -> None:
    """Reload the export and compare logits on a probe batch: a transformers release that ignored the
    stored position table would otherwise give a silently different model."""
    transformers = import_transformers()
    hf_model = transformers.MarianMTModel.from_pretrained(str(directory), local_files_only=True).eval()
    generator = torch.Generator().manual_seed(0)
    vocab, length = model.target_vocab_size, min(12, model.config.max_positions)
    src = torch.randint(EOS_ID + 1, vocab, (2, length), generator=generator)
    tgt = torch.randint(EOS_ID + 1, vocab, (2, length), generator=generator)
    tgt[:, 0] = BOS_ID
    mask = torch.ones_like(src, dtype=torch.bool)
    with torch.no_grad():
        ours = model(src, mask, tgt)
        theirs = hf_model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
    gap = float((ours - theirs).abs().max())
    if not gap <= 1e-4:
        raise SeqsmithError(
            f"the Marian export differs from the seqsmith model (largest logit gap {gap:.2e}); this "
            f"transformers {transformers.__version__} does not read the stored position table"
        )


def _export_tokenizer(directory: Path, out_dir: Path) -> None:
    """A MarianTokenizer for a joint SentencePiece vocabulary; other tokenizers are left out (logged)."""
    tokenizers = Tokenizers.load(directory)
    source = tokenizers.source
    if not (tokenizers.joint and isinstance(source, SentencePieceTokenizer)):
        logger.warning(
            "%s: only a joint SentencePiece vocabulary becomes a MarianTokenizer; the export has none "
            "(tokenize with seqsmith's tokenizer)",
            directory,
        )
        return
    spm = out_dir / "source.spm"
    spm.write_bytes(source.model_proto)
    vocab = out_dir / "vocab.json"
    vocab.write_text(json.dumps({source.piece(i): i for i in range(source.vocab_size)}), encoding="utf-8")
    tokenizer = import_transformers().MarianTokenizer(str(spm), str(spm), str(vocab))
    tokenizer.save_pretrained(str(out_dir))
