"""A seqsmith Transformer as two ONNX graphs, and the ``Seq2SeqModel`` that runs them on onnxruntime.

``encoder.onnx``: ids (batch, src_len) and mask -> states, every decoder layer's cross-attention
keys/values (batch, layers, 2, heads, src_len, head_dim) and the additive padding bias (batch, 1, 1,
src_len). ``decoder.onnx``: one step: the previous ids (rows), the position (a 0-d int64), the cross
keys/values and bias, and the self-attention cache (rows, layers, 2, heads, t, head_dim) -> log-probabilities
(rows, vocab), the cache grown to t + 1, and the last layer's cross-attention (rows, heads, src_len). Every
tensor is batch-first, so ``OnnxModel``'s memory and state reorder with the generic ``select`` and all of
seqsmith's searches run over it unchanged; this is also the form phones run (onnxruntime mobile).
The step graph concatenates the cache instead of writing into a preallocated one, which ONNX cannot express.
int8 is onnxruntime's dynamic quantization of both graphs' matrix products.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from seqsmith.errors import SeqsmithError, import_extra
from seqsmith.models.ctranslate2_export import transformer_model
from seqsmith.models.interface import Memory, Reorderable, Seq2SeqModel
from seqsmith.models.model_dir import LoadedModel
from seqsmith.models.transformer import TransformerModel, _DecoderLayer, padding_bias

META = "meta.json"
OPSET = 17


class _Encoder(nn.Module):
    def __init__(self, model: TransformerModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        memory = self.model.encode(src, mask)
        kv = torch.stack([torch.stack([k, v], 1) for k, v in zip(memory.cross_keys, memory.cross_values)], 1)
        return memory.states, kv, padding_bias(mask, memory.states.dtype)


class _DecoderStep(nn.Module):
    """``TransformerModel.decode_step`` written with a concatenated cache and batch-first tensors."""

    def __init__(self, model: TransformerModel) -> None:
        super().__init__()
        self.model = model
        self.heads, self.head_dim = model.config.heads, model.config.d_model // model.config.heads

    def forward(
        self, prev_ids: Tensor, position: Tensor, cross_kv: Tensor, bias: Tensor, cache: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        model, rows = self.model, prev_ids.size(0)
        table = model.target_positions.table.index_select(0, position.view(1))
        x = model.target_embedding(prev_ids) * model.embed_scale + table
        layers, weights = [], torch.zeros(rows, self.heads, bias.size(-1))
        for i, module in enumerate(model.decoder_layers):
            layer = cast(_DecoderLayer, module)
            own, cross = layer.self_attention, layer.cross_attention
            qkv = own.qkv(layer._in(x, layer.norm1)).view(rows, 3, self.heads, 1, self.head_dim)
            keys = torch.cat([cache[:, i, 0], qkv[:, 1]], dim=2)  # (rows, heads, t + 1, head_dim)
            values = torch.cat([cache[:, i, 1], qkv[:, 2]], dim=2)
            layers.append(torch.stack([keys, values], 1))
            scores = torch.matmul(qkv[:, 0] * own.scale, keys.transpose(-1, -2))
            attended = torch.matmul(torch.softmax(scores, -1), values).view(rows, -1)
            x = layer._add(x, own.out(attended), layer.norm1)
            q = (cross.q(layer._in(x, layer.norm2)) * cross.scale).view(rows, self.heads, 1, self.head_dim)
            scores = torch.matmul(q, cross_kv[:, i, 0].transpose(-1, -2)) + bias
            weights = torch.softmax(scores, -1)
            attended = torch.matmul(weights, cross_kv[:, i, 1]).view(rows, -1)
            x = layer._add(x, cross.out(attended), layer.norm2)
            x = layer._add(x, layer.ffn(layer._in(x, layer.norm3)), layer.norm3)
        logits = model.output(model.decoder_norm(x))
        return torch.log_softmax(logits, -1), torch.stack(layers, 1), weights.squeeze(2)


def _export(
    module: nn.Module, args: tuple[Tensor, ...], path: Path, names: dict[str, dict[int, str]]
) -> None:
    inputs = [name for name in names if not name.startswith("out:")]
    outputs = [name.removeprefix("out:") for name in names if name.startswith("out:")]
    axes = {name.removeprefix("out:"): dims for name, dims in names.items()}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


class _DropPreprocessingHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")


def write_onnx(loaded: LoadedModel, directory: Path, quantize: str) -> None:
    model = transformer_model(loaded, "the ONNX export")
    model = model.eval()
    config = model.config
    heads, head_dim, layers = config.heads, config.d_model // config.heads, config.decoder_layers
    directory.mkdir(parents=True)
    src = torch.tensor([[5, 6, 7, model.eos_id], [5, 6, model.eos_id, model.pad_id]])
    mask = src != model.pad_id
    length = {0: "batch", 1: "src_len"}
    _export(
        _Encoder(model),
        (src, mask),
        directory / "encoder.onnx",
        {
            "src": length,
            "src_mask": length,
            "out:states": length,
            "out:cross_kv": {0: "batch", 4: "src_len"},
            "out:bias": {0: "batch", 3: "src_len"},
        },
    )
    step = _DecoderStep(model)
    with torch.no_grad():
        _, cross_kv, bias = _Encoder(model)(src, mask)
    cache = torch.zeros(2, layers, 2, heads, 3, head_dim)
    rows = {0: "rows"}
    _export(
        step,
        (torch.tensor([5, 6]), torch.tensor(3), cross_kv, bias, cache),
        directory / "decoder.onnx",
        {
            "prev_ids": rows,
            "position": {},
            "cross_kv": {0: "rows", 4: "src_len"},
            "bias": {0: "rows", 3: "src_len"},
            "cache": {0: "rows", 4: "steps"},
            "out:log_probs": rows,
            "out:new_cache": {0: "rows", 4: "steps_plus_one"},
            "out:attention": {0: "rows", 2: "src_len"},
        },
    )
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        advice = logging.getLogger()  # onnxruntime logs, per file, to the root logger an image-model hint
        hint = _DropPreprocessingHint()
        advice.addFilter(hint)
        try:
            for name in ("encoder.onnx", "decoder.onnx"):
                path = directory / name
                quantize_dynamic(str(path), str(path), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            advice.removeFilter(hint)
    meta = {
        "vocab_size": model.target_vocab_size,
        "layers": layers,
        "heads": heads,
        "head_dim": head_dim,
        "max_positions": config.max_positions,
        "parameters": model.num_parameters(),
        "shape": model.shape(),
        "quantize": quantize,
        "ids": {"pad": model.pad_id, "bos": model.bos_id, "eos": model.eos_id},
    }
    (directory / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (directory / "README.txt").write_text(_IO_NOTE, encoding="utf-8")


_IO_NOTE = """encoder.onnx: src int64 (batch, src_len), src_mask bool (batch, src_len)
  -> states (batch, src_len, d_model), cross_kv (batch, layers, 2, heads, src_len, head_dim), bias
decoder.onnx: prev_ids int64 (rows,), position int64 (), cross_kv, bias (rows, 1, 1, src_len),
  cache (rows, layers, 2, heads, steps, head_dim); start with steps = 0 and prev_ids = BOS (meta.json)
  -> log_probs (rows, vocab), new_cache (steps + 1), attention (rows, heads, src_len)
"""


@dataclasses.dataclass
class OnnxMemory(Memory):
    cross_kv: Tensor  # (batch, layers, 2, heads, src_len, head_dim)
    bias: Tensor  # (batch, 1, 1, src_len)


@dataclasses.dataclass
class OnnxState(Reorderable):
    cache: Tensor  # (rows, layers, 2, heads, steps, head_dim)
    length: int
    attention: Tensor | None = None
    head_attention: Tensor | None = None


class OnnxModel(Seq2SeqModel):
    """An ONNX export behind the model interface: search, scoring and attention as for a torch model."""

    def __init__(self, directory: Path, encoder: Any, decoder: Any, meta: dict[str, Any]) -> None:
        super().__init__()
        self.directory, self.encoder, self.decoder, self.meta = directory, encoder, decoder, meta
        self.pad_id, self.bos_id, self.eos_id = (int(meta["ids"][k]) for k in ("pad", "bos", "eos"))

    @classmethod
    def load(cls, directory: Path) -> OnnxModel:
        ort = import_extra("onnxruntime", "export")
        try:
            meta = json.loads((directory / META).read_text(encoding="utf-8"))
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            sessions = [
                ort.InferenceSession(str(directory / name), options, providers=["CPUExecutionProvider"])
                for name in ("encoder.onnx", "decoder.onnx")
            ]
        except (
            OSError,
            ValueError,
            KeyError,
            RuntimeError,
            ort.capi.onnxruntime_pybind11_state.Fail,
        ) as error:
            raise SeqsmithError(
                f"{directory}: not a readable ONNX export ({type(error).__name__}: {str(error)[:200]}); "
                "export the model again with seqsmith export MODEL_DIR OUT_DIR --format onnx"
            ) from None
        return cls(directory, sessions[0], sessions[1], meta)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def output_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def max_output_length(self) -> int:
        return int(self.meta["max_positions"]) - 1

    def num_parameters(self) -> int:
        return int(self.meta["parameters"])

    def shape(self) -> str:
        return f"{self.meta['shape']} (ONNX, {self.meta['quantize']})"

    def encode(self, src: Tensor, src_mask: Tensor) -> OnnxMemory:
        if src.size(1) > int(self.meta["max_positions"]):
            raise SeqsmithError(f"a source of {src.size(1)} tokens exceeds model.max_positions")
        feed = {"src": np.ascontiguousarray(src.numpy()), "src_mask": np.ascontiguousarray(src_mask.numpy())}
        states, kv, bias = self.encoder.run(None, feed)
        return OnnxMemory(torch.from_numpy(states), src_mask, torch.from_numpy(kv), torch.from_numpy(bias))

    def decode_step(
        self, prev_ids: Tensor, memory: Memory, state: Any | None, need_attention: bool = False
    ) -> tuple[Tensor, OnnxState]:
        if not isinstance(memory, OnnxMemory):
            raise TypeError("OnnxModel.decode_step needs the memory of OnnxModel.encode")
        if state is None:
            meta = self.meta
            shape = (prev_ids.size(0), meta["layers"], 2, meta["heads"], 0, meta["head_dim"])
            state = OnnxState(torch.zeros(shape), 0)
        feed = {
            "prev_ids": np.ascontiguousarray(prev_ids.numpy()),
            "position": np.array(state.length, dtype=np.int64),
            "cross_kv": memory.cross_kv.numpy(),
            "bias": memory.bias.numpy(),
            "cache": state.cache.numpy(),
        }
        log_probs, cache, heads = (torch.from_numpy(a) for a in self.decoder.run(None, feed))
        return log_probs, OnnxState(cache, state.length + 1, heads.mean(dim=1), heads)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing a step at a time: the export has no whole-sequence decoder graph."""
        memory, state, steps = self.encode(src, src_mask), None, []
        for t in range(tgt_in.size(1)):
            log_probs, state = self.decode_step(tgt_in[:, t].contiguous(), memory, state)
            steps.append(log_probs)
        return torch.stack(steps, 1)
