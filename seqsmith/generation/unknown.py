"""Unknown-word replacement (Luong et al., 2015): an output UNK becomes the source token it attended to most.

The source token is copied as an id when the vocabulary has it (or it is a pointer-generator copy slot),
else as the text it stood for in the source (``Tokenizer.unknown_surfaces``). Search keeps no attention
by default, so it is recomputed by teacher forcing, and only for the outputs that hold an UNK: a model
that never emits one pays nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from seqsmith.data.tokenizer import Tokenizers
from seqsmith.generation.hypothesis import Hypothesis
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.specials import EOS_ID, PAD_ID


def source_surfaces(tokenizers: Tokenizers, text: str, source: Sequence[int]) -> dict[int, str]:
    """``unknown_surfaces`` of the text, at their positions in the encoder input ``source`` (which may
    have been cut from either end, and reversed by ``data.reverse_source``)."""
    surfaces = tokenizers.source.unknown_surfaces(text)
    if not surfaces:
        return {}
    full = tokenizers.source.encode(text)
    kept = len(source) - 1  # the EOS that finish_source appends
    tokens = list(source[:kept])
    turned = tokens not in (full[:kept], full[len(full) - kept :])
    if turned:
        tokens.reverse()
    shift = 0 if full[:kept] == tokens else len(full) - kept
    places = {p - shift: surface for p, surface in surfaces.items() if 0 <= p - shift < kept}
    return {kept - 1 - p: surface for p, surface in places.items()} if turned else places


def output_attention(model: Seq2SeqModel, source: Sequence[int], tokens: Sequence[int]) -> Tensor | None:
    """(len(tokens), src_len): the cross-attention with which each output token was predicted."""
    src = torch.as_tensor([list(source)], dtype=torch.long, device=model.device)
    tgt_in = torch.as_tensor([[model.bos_id, *tokens[:-1]]], dtype=torch.long, device=src.device)
    attention = model.teacher_forced_attention(src, src != model.pad_id, tgt_in)
    return None if attention is None else attention[0]


def replace_unknown(
    model: Seq2SeqModel | None,
    tokenizers: Tokenizers,
    text: str,
    source: Sequence[int],
    hypothesis: Hypothesis,
) -> tuple[list[int], dict[int, str]]:
    """The output ids with each UNK replaced by its attended source id, and the texts (by output position)
    for those whose source token was itself unknown. Unchanged when neither the hypothesis nor the model
    gives attention."""
    tokens, unk_id = list(hypothesis.tokens), tokenizers.target.unk_id
    unknown = [t for t, token in enumerate(tokens) if token == unk_id]
    if not unknown:
        return tokens, {}
    attention = hypothesis.attention
    if attention is None and model is not None:
        attention = output_attention(model, source, tokens)
    if attention is None:
        return tokens, {}
    hidden = (EOS_ID, PAD_ID) if model is None else (model.eos_id, model.pad_id)
    readable = [j for j, token in enumerate(source) if token not in hidden]
    if not readable:
        return tokens, {}
    columns = torch.as_tensor(readable, device=attention.device)
    surfaces = source_surfaces(tokenizers, text, source)
    texts: dict[int, str] = {}
    for t in unknown:
        j = readable[int(attention[t].float().index_select(0, columns).argmax())]
        if source[j] != unk_id:
            tokens[t] = int(source[j])
        elif j in surfaces:
            texts[t] = surfaces[j]
    return tokens, texts
