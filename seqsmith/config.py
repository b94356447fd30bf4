"""Typed configuration: one YAML file with sections data, model, train and generate.

Every section is a strict pydantic model, so an unknown key, a wrong type or an impossible value is
reported with the key, the value and the file. Dotted command-line overrides (``train.lr=3e-4``) are
applied to the raw YAML before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import json
import reprlib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from seqsmith.errors import SeqsmithError
from seqsmith.specials import SEP, SPECIALS, TRIPLE_ROLES, field_marker

_SHORT = reprlib.Repr()  # a wrong value as errors show it: short, however large the value
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxlevel = 80, 80, 4, 1
_SHOWN = 12  # problems listed in one error


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Kinded(Section):
    """A family of sections told apart by ``kind``: defining a subclass with a new ``kind`` literal
    registers it in its family's ``kinds`` (the family's base defines that dictionary)."""

    kind: str
    kinds: ClassVar[dict[str, type[Kinded]]]
    family: ClassVar[str]  # what a kind names, for errors
    hint: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "kinds" in cls.__dict__:
            return
        kind = cls.model_fields["kind"].default
        if not isinstance(kind, str):
            raise TypeError(f"{cls.__name__} must give kind a default, e.g. kind: Literal['mine'] = 'mine'")
        cls.kinds[kind] = cls

    @classmethod
    def pick(cls, raw: Any, default: str | None = None) -> Any:
        """The family member ``raw["kind"]`` names, validated; anything but a mapping is left to pydantic."""
        if not isinstance(raw, dict):
            return raw
        kind = raw.get("kind", default)
        if kind not in cls.kinds:
            known = ", ".join(sorted(cls.kinds))
            raise ValueError(f"unknown {cls.family} kind {kind!r}; known: {known}{cls.hint}")
        return cls.kinds[kind].model_validate(raw)


class TokenizerConfig(Section):
    kind: Literal["sentencepiece", "char", "word"] = "sentencepiece"
    model_type: Literal["bpe", "unigram"] = "bpe"  # SentencePiece only
    vocab_size: int = Field(8000, ge=16)  # SentencePiece size; for char/word: an upper bound
    joint: bool = True  # one vocabulary for source and target (required by model.share_embeddings)
    min_freq: int = Field(1, ge=1)  # char/word: rarer symbols become <unk>
    lowercase: bool = False
    character_coverage: float = Field(1.0, gt=0.0, le=1.0)  # SentencePiece; use 0.9995 for CJK-heavy data
    sample_lines: int = Field(2_000_000, ge=1000)  # SentencePiece trains on at most this many lines per side
    # a character (char, sentencepiece) or word (word) outside the vocabulary is spelled by its UTF-8 bytes,
    # 256 reserved ids, instead of <unk>: any text round-trips; false keeps the ids of older vocabularies
    byte_fallback: bool = True
    # an existing tokenizer directory used as it is instead of training one (a prepared data directory's
    # tokenizer/, or a model's): another test set for a trained model, comparable perplexities
    path: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not {"sampling_copies", "sampling_alpha"} & raw.keys():
            return raw
        if not raw.get("sampling_copies"):  # what model directories of earlier versions hold: no copies
            return {k: v for k, v in raw.items() if k not in ("sampling_copies", "sampling_alpha")}
        raise ValueError(
            "sampling_copies and sampling_alpha moved to data.augment: write "
            "[{copies: N, transforms: [{kind: bpe_dropout, alpha: A}]}] there"
        )


Side = Literal["source", "target", "both"]


class TransformConfig(Kinded):
    """One step of an augmentation: what it does to the words (or the segmentation) of a side."""

    kinds: ClassVar[dict[str, type[Kinded]]] = {}
    family: ClassVar[str] = "transform"
    side: Side = "source"


class DropTransform(TransformConfig):
    kind: Literal["drop"] = "drop"  # each word left out with chance p (token dropout; EDA's deletion)
    p: float = Field(0.1, gt=0.0, lt=1.0)


class BlankTransform(TransformConfig):
    kind: Literal["blank"] = "blank"  # each word replaced by ``token`` with chance p
    p: float = Field(0.1, gt=0.0, lt=1.0)
    token: str = "<blank>"  # added to the vocabulary as one symbol

    @field_validator("token")
    @classmethod
    def _one_symbol(cls, token: str) -> str:
        return _check_symbol(token, "the blank token")


class ShuffleTransform(TransformConfig):
    kind: Literal["shuffle"] = "shuffle"  # no word moves more than k places (Lample et al. 2018)
    k: int = Field(3, ge=1, le=100)


class SwapTransform(TransformConfig):
    kind: Literal["swap"] = "swap"  # alpha x words swaps of two random words (EDA)
    alpha: float = Field(0.1, gt=0.0, le=1.0)


class SynonymTransform(TransformConfig):
    kind: Literal["synonym"] = "synonym"  # alpha x words words replaced by a WordNet synonym (EDA)
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    language: str = "en"  # WordNet exists for English only (Debian package wordnet-base)


class InsertTransform(TransformConfig):
    kind: Literal["insert"] = "insert"  # alpha x words synonyms of random words put at random places (EDA)
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    language: str = "en"


class BPEDropoutTransform(TransformConfig):
    # a sampled segmentation instead of the best one (BPE-dropout, Provilkov et al. 2020; subword
    # regularization, Kudo 2018): SentencePiece only, applied after the word transforms
    kind: Literal["bpe_dropout"] = "bpe_dropout"
    side: Side = "both"
    alpha: float = Field(0.1, gt=0.0, le=1.0)  # bpe: chance a merge is skipped; unigram: smoothing


class AugmentConfig(Section):
    """``copies`` extra versions of every training pair, each made by ``transforms`` in order, seeded by
    (data.seed, the augmentation, the copy, the pair): prepare writes the same bytes every run."""

    copies: int = Field(1, ge=1, le=100)
    transforms: list[SerializeAsAny[TransformConfig]] = Field(min_length=1)

    @field_validator("transforms", mode="before")
    @classmethod
    def _pick_transforms(cls, raw: Any) -> Any:
        return [TransformConfig.pick(item) for item in raw] if isinstance(raw, list) else raw


def _check_symbol(text: str, what: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{what} {text!r} must be one non-empty word without spaces")
    if text in (*SPECIALS, SEP):
        raise ValueError(f"{what} {text!r} is one of the special symbols {[*SPECIALS, SEP]}; pick another")
    return text


class TrainSource(Section):
    """One of several training corpora (real and back-translated pairs, say), read like ``data.train``."""

    path: str
    weight: float | None = Field(
        None, ge=0.0
    )  # its share of each epoch's examples (the weights are relative)
    upsample: float | None = Field(
        None, ge=0.0
    )  # or: how often an epoch sees it (2: twice, 0.5: a seeded half)
    tag: str | None = None  # a token put before each of its sources (tagged back-translation, Caswell 2019)
    max_examples: int | None = Field(None, ge=1)  # its first N pairs only (data.max_train_examples: of all)
    # transforms applied to every pair of this corpus in place (noised back-translation: drop, blank, shuffle)
    transforms: list[SerializeAsAny[TransformConfig]] = []

    @field_validator("transforms", mode="before")
    @classmethod
    def _pick_transforms(cls, raw: Any) -> Any:
        return [TransformConfig.pick(item) for item in raw] if isinstance(raw, list) else raw

    @field_validator("tag")
    @classmethod
    def _one_symbol(cls, tag: str | None) -> str | None:
        return None if tag is None else _check_symbol(tag, "the tag")

    @model_validator(mode="after")
    def _one_rate(self) -> TrainSource:
        if self.weight is not None and self.upsample is not None:
            raise ValueError(f"{self.path}: give weight or upsample, not both")
        return self


class FieldConfig(Section):
    """One named input of a source made of several (``data.fields``): its text is opened by the token
    ``<name>`` and cut to ``max_length`` tokens from one side."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # jsonl: the JSON key holding it
    # triples: a list of knowledge-graph facts, each "subject | predicate | object" or [s, p, o], read as
    # <S> subject <P> predicate <O> object ...
    kind: Literal["text", "triples"] = "text"
    # in tokens; None: only max_source_length bounds it; 0: only the marker stays (a model without it)
    max_length: int | None = Field(None, ge=0)
    truncate_from: Literal["right", "left"] = "right"  # left keeps the end (the latest turns of a history)
    required: bool = True  # an empty text is an error naming the field and the line; else the marker alone


FIELD_SLOTS = 8  # the most fields a source may have (segment embeddings keep a row for each)
GROUNDED_FIELDS = {"cmu_dog": ("history", "document"), "webnlg": ("triples",)}  # what those readers give


class DataConfig(Section):
    # cmu_dog: CMU Document Grounded Conversations, a split is a directory of conversations (JSON) and
    # data.documents the WikiData directory; webnlg: a split is a directory of WebNLG XML files
    format: Literal["parallel", "tsv", "jsonl", "dialogue", "cmu_dog", "webnlg"] = "parallel"
    # parallel: prefixes, read as <prefix>.<source_suffix> and <prefix>.<target_suffix>;
    # tsv/jsonl/dialogue: file paths. Relative paths are resolved from the working directory.
    # train may also list several corpora, each with a weight or upsampling factor and a tag (TrainSource)
    train: str | list[TrainSource]
    dev: str | None = None
    test: str | None = None
    source_suffix: str = "src"
    target_suffix: str = "tgt"
    source_column: int = Field(0, ge=0)  # tsv
    target_column: int = Field(1, ge=0)  # tsv
    source_field: str = "source"  # jsonl
    target_field: str = "target"  # jsonl
    reference_fields: list[
        str
    ] = []  # jsonl test/dev: several references, e.g. [summary1, summary2, summary3]
    history: int = Field(3, ge=1)  # dialogue: previous turns kept as context
    turn_separator: str = " <sep> "  # dialogue: joins context turns (add it to the tokenizer as a symbol)
    tokenizer: TokenizerConfig = TokenizerConfig()
    max_source_length: int = Field(256, ge=1)  # in tokens, before BOS/EOS
    max_target_length: int = Field(256, ge=1)
    overlong: Literal["filter", "truncate"] = "filter"  # what to do with training pairs past the limits
    truncate_source_from: Literal["right", "left"] = "right"  # left keeps the latest dialogue turns
    empty_lines: Literal["skip", "error"] = "skip"
    max_train_examples: int | None = Field(None, ge=1)  # use only the first N training pairs
    output_dir: str = "runs/data"  # where `seqsmith prepare` writes tokenizer and binarized splits
    augment: list[AugmentConfig] = []  # extra training pairs made by transforms (noise, EDA, BPE-dropout)
    seed: int = 1  # of the augmentations
    # the source tokens in reverse order, in prepare and in generation (Sutskever et al. 2014)
    reverse_source: bool = False
    # named inputs the source is made of, in this order (jsonl: keys of each row; cmu_dog: history,
    # document; webnlg: triples); empty: one source text
    fields: list[FieldConfig] = Field([], max_length=FIELD_SLOTS)
    documents: str | None = None  # cmu_dog: the WikiData directory of the articles
    # cmu_dog: each conversation gets another film's article (a seeded derangement): the ablation that
    # shows whether a model reads the document
    shuffle_documents: bool = False
    categories: list[str] = []  # webnlg: only entries of these categories (e.g. the unseen ones of test)

    @model_validator(mode="after")
    def _fields_fit(self) -> DataConfig:
        names = [f.name for f in self.fields]
        if len(set(names)) < len(names):
            raise ValueError(f"data.fields names a field twice: {names}")
        given = GROUNDED_FIELDS.get(self.format)
        if given is not None and not self.fields:
            raise ValueError(
                f"format {self.format} gives the fields {', '.join(given)}: list those the model reads "
                "in data.fields"
            )
        if given is not None and (unknown := sorted(set(names) - set(given))):
            raise ValueError(f"format {self.format} has no field {unknown[0]!r}; it gives {', '.join(given)}")
        if self.fields and self.format not in ("jsonl", *GROUNDED_FIELDS):
            raise ValueError(f"data.fields needs format jsonl, cmu_dog or webnlg, not {self.format}")
        if self.fields and self.reverse_source:
            raise ValueError("data.reverse_source would turn the fields' markers around: drop one of the two")
        if self.fields and (self.augment or any(source.transforms for source in self.train_sources)):
            raise ValueError(
                "data.augment and corpus transforms change one source text (they could drop a field's "
                "marker); they do not take data.fields yet"
            )
        if self.shuffle_documents and self.format != "cmu_dog":
            raise ValueError(
                "data.shuffle_documents pairs CMU_DoG conversations with other articles: format cmu_dog"
            )
        if self.categories and self.format != "webnlg":
            raise ValueError("data.categories picks WebNLG entries by category: format webnlg")
        if self.format == "webnlg" and any(f.kind != "triples" for f in self.fields):
            raise ValueError("format webnlg reads facts: give its field kind: triples")
        if self.format == "cmu_dog" and self.documents is None:
            raise ValueError("format cmu_dog needs data.documents: the WikiData directory of the articles")
        need = sum((f.max_length or 0) + 1 for f in self.fields)
        if need > self.max_source_length:
            raise ValueError(
                f"data.fields take up to {need} tokens with their markers, over max_source_length="
                f"{self.max_source_length}: raise it or lower the fields' max_length"
            )
        return self

    @field_validator("train")
    @classmethod
    def _some_sources(cls, train: str | list[TrainSource]) -> str | list[TrainSource]:
        if isinstance(train, str):
            return train
        if not train:
            raise ValueError("lists no corpus; give one path or a list of {path: ...}")
        rated = [source.weight is not None for source in train]
        if any(rated) and not all(rated):
            raise ValueError("give every corpus a weight, or none (then each is read upsample times)")
        rates = [source.weight if source.weight is not None else source.upsample for source in train]
        if sum(1.0 if rate is None else rate for rate in rates) <= 0:
            raise ValueError("the weights (or upsample factors) sum to 0: no corpus would be read")
        return train

    @property
    def train_sources(self) -> list[TrainSource]:
        return [TrainSource(path=self.train)] if isinstance(self.train, str) else self.train

    @property
    def symbols(self) -> list[str]:
        """Tokens the vocabulary must hold as one symbol each: the corpora's tags, the blank tokens."""
        found = [source.tag for source in self.train_sources if source.tag is not None]
        transforms = [t for a in self.augment for t in a.transforms]
        transforms += [t for source in self.train_sources for t in source.transforms]
        found += [t.token for t in transforms if isinstance(t, BlankTransform)]
        found += [field_marker(f.name) for f in self.fields]
        found += list(TRIPLE_ROLES) if any(f.kind == "triples" for f in self.fields) else []
        return list(dict.fromkeys(found))


class TransformerConfig(Section):
    arch: Literal["transformer"] = "transformer"
    d_model: int = Field(256, ge=8)
    heads: int = Field(4, ge=1)
    ffn_dim: int = Field(1024, ge=8)
    encoder_layers: int = Field(3, ge=1)
    decoder_layers: int = Field(3, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_positions: int = Field(1024, ge=16)
    norm: Literal["pre", "post"] = "pre"
    share_embeddings: bool = True  # source and target embeddings shared (needs a joint vocabulary)
    tie_output: bool = True  # decoder input embedding reused as the output projection
    activation: Literal["relu", "gelu"] = "relu"
    init_encoder_from: str | None = None  # a local Marian directory whose encoder starts training
    init_encoder_embeddings: bool = False  # also its token embeddings (only with the same vocabulary ids)
    # a learned vector per input field (data.fields) added to its tokens, BERT's segment embeddings
    segment_embeddings: bool = False
    # an input field (data.fields) read by an encoder of its own, which the decoder attends to with a
    # second cross-attention in every layer; the main encoder reads the other fields
    knowledge_field: str | None = None
    knowledge_layers: int = Field(2, ge=1)  # of that encoder
    # copy from the source (See et al. 2017 on a Transformer): a gate mixes the output distribution with
    # the last layer's cross-attention scattered onto the source ids (needs one vocabulary for both sides)
    copy_source: bool = False

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.d_model % self.heads:
            raise ValueError(f"heads={self.heads} must divide d_model={self.d_model}")
        return self


class RNNConfig(Section):
    arch: Literal["rnn"] = "rnn"
    cell: Literal["gru", "lstm"] = "gru"
    embed_dim: int = Field(256, ge=8)
    hidden_dim: int = Field(512, ge=8)
    encoder_layers: int = Field(1, ge=1)
    decoder_layers: int = Field(1, ge=1)
    bidirectional: bool = True
    attention: Literal["bahdanau", "luong_dot", "luong_general"] = "bahdanau"
    input_feeding: bool = True
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    share_embeddings: bool = False
    tie_output: bool = False
    pointer_generator: bool = False  # copy from the source (See et al., 2017); needs a joint vocabulary
    coverage: bool = False  # coverage vector in attention and coverage loss (See et al., 2017)
    coverage_loss_weight: float = Field(1.0, ge=0.0)
    oov_slots: int = Field(0, ge=0)  # pointer_generator with char/word vocabularies: out-of-vocabulary
    # source symbols a sentence may copy (See et al.'s extended vocabulary); set before `seqsmith prepare`

    @model_validator(mode="after")
    def _slots_need_copying(self) -> RNNConfig:
        if self.oov_slots and not self.pointer_generator:
            raise ValueError("oov_slots needs pointer_generator: true")
        return self


class ConvConfig(Section):
    """The convolutional encoder-decoder of Gehring et al. (2017). ``*_channels`` and ``*_kernels`` take
    one value for every layer or a list with one per layer."""

    arch: Literal["conv"] = "conv"
    embed_dim: int = Field(256, ge=8)
    encoder_layers: int = Field(4, ge=1)
    decoder_layers: int = Field(4, ge=1)
    encoder_channels: int | list[int] = 256
    decoder_channels: int | list[int] = 256
    encoder_kernels: int | list[int] = 3  # odd: the encoder sees as far left as right
    decoder_kernels: int | list[int] = 3  # causal: a step sees this many inputs, its own included
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    max_positions: int = Field(1024, ge=16)  # learned position embeddings
    weight_norm: bool = True
    share_embeddings: bool = False
    tie_output: bool = False

    def per_layer(self, key: str) -> list[int]:
        """The value of ``key`` for each layer of its stack."""
        value = getattr(self, key)
        return [value] * getattr(self, f"{key.split('_')[0]}_layers") if isinstance(value, int) else value

    @model_validator(mode="after")
    def _layers_agree(self) -> ConvConfig:
        for key in ("encoder_channels", "decoder_channels", "encoder_kernels", "decoder_kernels"):
            values, layers = self.per_layer(key), getattr(self, f"{key.split('_')[0]}_layers")
            if len(values) != layers:
                raise ValueError(f"{key} lists {len(values)} values for {layers} layers; give one per layer")
            if any(not 1 <= v <= 4096 for v in values):
                raise ValueError(f"{key}={values} must lie in 1..4096")
        if any(k % 2 == 0 for k in self.per_layer("encoder_kernels")):
            raise ValueError(f"encoder_kernels={self.encoder_kernels} must be odd (centred convolutions)")
        return self


class PretrainedConfig(Section):
    """A local Hugging Face encoder-decoder (Marian, T5, BART, ...) to fine-tune; its tokenizer replaces
    ``data.tokenizer``."""

    arch: Literal["pretrained"] = "pretrained"
    path: str  # directory with config.json, the weights and the tokenizer files; nothing is downloaded


ModelConfig = Annotated[
    TransformerConfig | RNNConfig | ConvConfig | PretrainedConfig, Field(discriminator="arch")
]


class ObjectiveConfig(Kinded):
    """The ``train.objective`` section: one subclass per objective, picked by its ``kind``, so a plug-in
    objective (a config class here and an ``Objective`` in ``seqsmith.training.objective``) is validated
    like the built-in ones."""

    kinds: ClassVar[dict[str, type[Kinded]]] = {}
    family: ClassVar[str] = "objective"
    hint: ClassVar[str] = " (a plug-in objective registers its kind when the module defining it is imported)"


class MLEObjectiveConfig(ObjectiveConfig):
    """Teacher-forced cross-entropy with train.label_smoothing, the model's auxiliary losses and L1/L2."""

    kind: Literal["mle"] = "mle"


class WordDistillObjectiveConfig(ObjectiveConfig):
    """Word-level distillation (Hinton et al. 2015; Kim & Rush 2016): the teacher's next-token
    distributions as soft targets, mixed with the label-smoothed cross-entropy on the references."""

    kind: Literal["word_distill"] = "word_distill"
    teacher: str  # a model directory with the student's target vocabulary (train on the teacher's data)
    weight: float = Field(0.5, ge=0.0, le=1.0)  # 1: only the teacher's distributions; 0: plain MLE
    temperature: float = Field(1.0, gt=0.0, le=100.0)  # > 1 softens both distributions (loss scaled by T^2)


RewardName = Literal[
    "bleu", "chrf", "chrf++", "rouge1", "rouge2", "rougeL", "rougeLsum", "distinct1", "distinct2", "length"
]  # the sentence rewards of seqsmith.evaluation.rewards, each in [0, 1]


class SamplingSettings(Section):
    """What the objectives that sample outputs share: how they sample, and the share of MLE mixed in."""

    gamma: float = Field(0.9, ge=0.0, le=1.0)  # share of the sequence loss; 1 - gamma: MLE on references
    temperature: float = Field(1.0, gt=0.0, le=10.0)  # of the sampled outputs
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_length_a: float = Field(1.2, ge=0.0, le=10.0)  # output length limit a * source length + b
    max_length_b: int = Field(10, ge=1, le=1024)


class SequenceLevelSettings(SamplingSettings):
    """The reward of the metric-driven objectives: a weighted mix of sentence metrics."""

    reward: dict[RewardName, Annotated[float, Field(ge=0.0, le=100.0)]] = {"bleu": 1.0}
    bleu_tokenize: str = "13a"  # for the bleu reward (zh for Chinese)

    @field_validator("reward")
    @classmethod
    def _some_reward(cls, reward: dict[str, float]) -> dict[str, float]:
        if not reward or sum(reward.values()) <= 0:
            raise ValueError("give at least one reward a positive weight, e.g. {bleu: 1.0}")
        return reward


class SelfCriticalObjectiveConfig(ObjectiveConfig, SequenceLevelSettings):
    """Self-critical sequence training (Rennie et al. 2017; Paulus et al. 2018): policy gradient on
    sampled outputs with the greedy output's reward, or the other samples' mean, as the baseline."""

    kind: Literal["self_critical"] = "self_critical"
    samples: int = Field(1, ge=1, le=64)  # per source
    baseline: Literal["greedy", "mean"] = "greedy"  # mean: of the source's other samples (samples >= 2)

    @model_validator(mode="after")
    def _mean_needs_samples(self) -> SelfCriticalObjectiveConfig:
        if self.baseline == "mean" and self.samples < 2:
            raise ValueError("baseline=mean averages the other samples of a source: set samples >= 2")
        return self


class MinimumRiskObjectiveConfig(ObjectiveConfig, SequenceLevelSettings):
    """Minimum-risk training (Shen et al. 2016; Edunov et al. 2018): the expected cost 1 - reward under
    the model's distribution renormalized over a set of candidates."""

    kind: Literal["minimum_risk"] = "minimum_risk"
    candidates: int = Field(8, ge=2, le=64)  # per source
    search: Literal["sample", "beam"] = "sample"  # how candidates are found; repeated samples count once
    alpha: float = Field(1.0, gt=0.0, le=10.0)  # sharpness: candidate weights ~ exp(alpha * log_prob)
    # a candidate's log_prob: summed over its tokens (Shen et al.), or their mean, which keeps the weights
    # of candidates of different lengths comparable and soft (the code of Edunov et al.)
    log_prob: Literal["sum", "mean"] = "sum"
    add_reference: bool = True  # the reference joins the candidates (Edunov et al. 2018)


class DiscriminatorConfig(Section):
    """The adversarial objective's classifier of (source, output) pairs as human or generated."""

    arch: Literal["cnn", "gru"] = "cnn"  # cnn: max-pooled convolutions (SeqGAN); gru: mean-pooled BiGRU
    embed_dim: int = Field(64, ge=1, le=4096)
    hidden_dim: int = Field(128, ge=1, le=4096)  # cnn: filters per kernel width; gru: per direction
    kernel_sizes: list[Annotated[int, Field(ge=1, le=16)]] = [2, 3, 4]  # cnn
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    # its learning rate as a multiple of train.lr: it starts from random weights, the generator usually
    # from a trained model at a fine-tuning rate
    lr_factor: float = Field(1.0, gt=0.0, le=1000.0)

    @field_validator("kernel_sizes")
    @classmethod
    def _some_kernel(cls, sizes: list[int]) -> list[int]:
        if not sizes:
            raise ValueError("name at least one kernel width, e.g. [2, 3, 4]")
        return sizes


class AdversarialObjectiveConfig(ObjectiveConfig, SamplingSettings):
    """Adversarial training (Yu et al. 2017; Li et al. 2017): a discriminator learns to tell references
    from sampled outputs, and the generator is trained by policy gradient with the discriminator's
    probability of "human" as the reward, mixed with MLE."""

    kind: Literal["adversarial"] = "adversarial"
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    pretrain_discriminator: int = Field(200, ge=0)  # updates of the discriminator alone, first
    discriminator_steps: int = Field(1, ge=1, le=100)  # then cycles of this many discriminator updates
    generator_steps: int = Field(1, ge=1, le=100)  # and this many generator updates
    samples: int = Field(1, ge=1, le=64)  # per source
    baseline: Literal["running", "mean"] = "running"  # running: a moving mean of the reward; mean: others'
    baseline_decay: float = Field(0.9, ge=0.0, lt=1.0)  # of the running baseline

    @model_validator(mode="after")
    def _mean_needs_samples(self) -> AdversarialObjectiveConfig:
        if self.baseline == "mean" and self.samples < 2:
            raise ValueError("baseline=mean averages the other samples of a source: set samples >= 2")
        return self


LOWER_IS_BETTER = ("loss", "ppl", "ter")  # validation metrics where smaller is better

ModelPart = Literal["encoder", "decoder", "embeddings"]


class TrainConfig(Section):
    model_dir: str = "runs/model"
    seed: int = 1
    objective: SerializeAsAny[ObjectiveConfig] = Field(default_factory=MLEObjectiveConfig)
    # start from another model directory's weights (fine-tuning, RL from an MLE model, transfer learning);
    # vocabulary rows are matched by piece, so the two vocabularies may differ
    init_from: str | None = None
    init_parts: list[ModelPart] = ["encoder", "decoder", "embeddings"]
    freeze: list[ModelPart] = []  # parts that keep their starting weights (a transferred encoder, say)
    # a factor on the learning rate per part (0.1: a transferred part moves at a tenth of the rate)
    part_lr: dict[ModelPart, Annotated[float, Field(gt=0.0, le=100.0)]] = {}
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    lr: float = Field(5e-4, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd and rmsprop
    weight_decay: float = Field(0.0, ge=0.0)  # decoupled for adamw, L2 in the gradient otherwise
    l1: float = Field(0.0, ge=0.0)  # L1 penalty added to the loss
    l2: float = Field(0.0, ge=0.0)  # explicit L2 penalty added to the loss
    schedule: Literal["constant", "noam", "inverse_sqrt", "cosine", "plateau"] = "inverse_sqrt"
    warmup_steps: int = Field(4000, ge=0)
    min_lr: float = Field(1e-6, ge=0.0)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    plateau_patience: int = Field(2, ge=0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    clip_grad_norm: float | None = Field(1.0, gt=0.0)
    batch_tokens: int = Field(4096, ge=16)  # target tokens per batch (with padding)
    accumulate: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    max_epochs: int | None = Field(10, ge=1)  # budgets combine: training stops at the first one reached
    max_minutes: float | None = Field(None, gt=0.0)
    validate_every: int = Field(1000, ge=1)
    validation_bleu: bool = True
    early_stopping_metric: Literal[
        "loss", "ppl", "bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL", "distinct1", "distinct2"
    ] = "bleu"
    patience: int | None = Field(None, ge=1)  # validations without improvement before stopping
    keep_best: int = Field(1, ge=0)
    checkpoint_every: int = Field(1000, ge=1)
    log_every: int = Field(100, ge=1)
    # bf16: bfloat16 autocast; auto: bf16 where the hardware has native bfloat16 and a probe of the model's
    # first steps finds it faster, else fp32 (seqsmith/training/precision.py)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _bf16_is_precision(cls, raw: Any) -> Any:
        """Model directories written before train.precision say ``bf16: true|false``."""
        if isinstance(raw, dict) and isinstance(raw.get("bf16"), bool) and "precision" not in raw:
            raw = {**raw, "precision": "bf16" if raw["bf16"] else "fp32"}
            del raw["bf16"]
        return raw

    @field_validator("objective", mode="wrap")
    @classmethod
    def _pick_objective(cls, raw: Any, handler: Any) -> Any:
        """A discriminated union over every registered objective, the plug-ins included."""
        return ObjectiveConfig.pick(raw, "mle") if isinstance(raw, dict) else handler(raw)

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger early_stopping_metric is a better model."""
        return self.early_stopping_metric not in LOWER_IS_BETTER

    @model_validator(mode="after")
    def _some_budget(self) -> TrainConfig:
        if self.max_steps is None and self.max_epochs is None and self.max_minutes is None:
            raise ValueError("set at least one of max_steps, max_epochs, max_minutes")
        if self.early_stopping_metric == "bleu" and not self.validation_bleu:
            raise ValueError(
                "early_stopping_metric=bleu needs validation_bleu: true; pick loss or another metric"
            )
        if not self.init_parts:
            raise ValueError("init_parts is empty: name encoder, decoder and/or embeddings")
        if {"encoder", "decoder", "embeddings"} <= set(self.freeze):
            raise ValueError("freeze names every part, so nothing would train: leave at least one out")
        if frozen := sorted(set(self.freeze) & set(self.part_lr)):
            raise ValueError(f"{', '.join(frozen)} is frozen and has a part_lr too: drop one of the two")
        return self


class GenerateConfig(Section):
    method: Literal["greedy", "beam", "sample", "diverse_beam"] = "beam"
    beam_size: int = Field(5, ge=1, le=1024)  # search memory grows with beam x vocabulary: 1024 bounds it
    nbest: int = Field(1, ge=1, le=1024)
    # true: a sentence stops once beam_size hypotheses have ended (fairseq; transformers early_stopping=True);
    # false: only when no open beam can still beat them (exact within the beam; early_stopping="never")
    early_stopping: bool = True
    length_penalty: Literal["none", "average", "gnmt"] = "gnmt"
    alpha: float = Field(0.6, ge=0.0)  # GNMT length penalty exponent
    coverage_penalty: float = Field(0.0, ge=0.0)  # GNMT beta
    no_repeat_ngram: int = Field(0, ge=0)
    min_length: int = Field(0, ge=0)
    max_length_a: float = Field(1.2, ge=0.0)  # max length = a * source length + b
    max_length_b: int = Field(10, ge=1)
    max_length: int = Field(1024, ge=1)  # never more output tokens than this (nor than the model's positions)
    fixed_length: bool = False  # output exactly as many tokens as the source (couplets)
    temperature: float = Field(1.0, gt=0.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    groups: int = Field(1, ge=1)  # diverse beam search
    diversity: float = Field(0.5, ge=0.0)
    seed: int | None = None
    batch_tokens: int = Field(8000, ge=16)
    keep_attention: bool = False  # return each hypothesis's cross-attention (for pictures); costs time
    # an output <unk> becomes the source token it attended to most (Luong et al., 2015); attention is
    # recomputed only for the outputs that hold one. false drops it: the text never shows <unk>
    replace_unk: bool = True
    # subword copy models: a capitalized source word (a name) the output begins is finished as the source
    # spells it, and not glued onto (needs a joint SentencePiece vocabulary; generation/rules.py)
    whole_words: bool = False
    # what runs the search: seqsmith's own (torch), or an export of `seqsmith export` (whose config.json
    # names its engine); chosen when the model is loaded, like quantize
    engine: Literal["torch", "ctranslate2", "onnx"] = "torch"
    # int8: linear layers with int8 weights and dynamically quantized activations (CPU decoding);
    # int8_output: the vocabulary projection alone, what a step of one sentence waits on (docs/lightweight.md)
    quantize: Literal["none", "int8", "int8_output"] = "none"

    @property
    def width(self) -> int:
        """Hypotheses searched side by side per sentence: what a batch's memory scales with."""
        if self.method in ("beam", "diverse_beam"):
            return self.beam_size
        return self.nbest if self.method == "sample" else 1

    @model_validator(mode="after")
    def _consistent(self) -> GenerateConfig:
        if self.nbest > self.beam_size:
            raise ValueError(f"nbest={self.nbest} cannot exceed beam_size={self.beam_size}")
        if self.method == "diverse_beam" and self.beam_size % self.groups:
            raise ValueError(f"groups={self.groups} must divide beam_size={self.beam_size}")
        return self


class EvaluateConfig(Section):
    split: Literal["dev", "test"] = "test"
    metrics: list[str] = ["bleu", "chrf"]  # bleu chrf ter rouge distinct self_bleu bleu1 bleu2
    bleu_tokenize: str = "13a"  # sacrebleu tokenizer: 13a, intl, zh (Chinese), char, none
    lowercase: bool = False
    examples: int = Field(8, ge=0)  # example outputs (with attention pictures) in the HTML report


class ServeConfig(Section):
    """What the server lets one request ask for: caps set by whoever runs it, not by its clients."""

    max_body_bytes: int = Field(1_000_000, ge=1024, le=1 << 30)  # larger bodies get 413 unread
    max_texts: int = Field(64, ge=1, le=100_000)  # texts in one request
    max_chars: int = Field(5000, ge=1, le=1_000_000)  # characters in one text
    max_beam: int = Field(16, ge=1, le=1024)  # caps hypotheses a text: beam_size, or nbest when sampling
    max_output_tokens: int = Field(256, ge=1, le=100_000)  # caps generate.max_length
    batching: bool = True  # false: one request's texts per search (the baseline of bench/serve_load.py)
    batch_tokens: int = Field(4000, ge=16, le=1_000_000)  # source tokens x beam in one batched search
    max_wait_ms: float = Field(5.0, ge=0.0, le=1000.0)  # how long a batch waits for company
    queue_texts: int = Field(1024, ge=1, le=1_000_000)  # texts waiting; beyond it requests get 429
    timeout_s: float = Field(30.0, gt=0.0, le=3600.0)  # a request not answered by then gets 504
    body_timeout_s: float = Field(10.0, gt=0.0, le=600.0)  # a body sent slower than this gets 408
    threads: int | None = Field(None, ge=1, le=256)  # torch threads per worker (default: cores / workers)
    cors_origins: list[str] = []  # origins a browser may call the API from; none unless listed


class Config(Section):
    data: DataConfig
    model: ModelConfig = TransformerConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    serve: ServeConfig = ServeConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_arch(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("model"), dict) and "arch" not in raw["model"]:
            raw = {**raw, "model": {"arch": "transformer", **raw["model"]}}
        return raw

    @model_validator(mode="after")
    def _cross_section(self) -> Config:
        if getattr(self.model, "share_embeddings", False) and not self.data.tokenizer.joint:
            raise ValueError("model.share_embeddings needs data.tokenizer.joint: true")
        if self.data.reverse_source and self.generate.whole_words:
            raise ValueError(
                "generate.whole_words reads source words in their order, which data.reverse_source turns "
                "around: set one of them to false"
            )
        if getattr(self.model, "segment_embeddings", False) and not self.data.fields:
            raise ValueError("model.segment_embeddings tells the fields of data.fields apart: declare them")
        copying = getattr(self.model, "copy_source", False)
        if copying and not self.data.tokenizer.joint:
            raise ValueError(
                "model.copy_source lands on source ids in the output: set data.tokenizer.joint: true"
            )
        if copying and getattr(self.model, "knowledge_field", None):
            raise ValueError(
                "model.copy_source reads the main cross-attention, not model.knowledge_field's yet"
            )
        knowledge = getattr(self.model, "knowledge_field", None)
        names = [f.name for f in self.data.fields]
        if knowledge is not None and (knowledge not in names or len(names) < 2):
            raise ValueError(
                f"model.knowledge_field {knowledge!r} must be one of two or more data.fields (has: {names})"
            )
        data, model = Path(self.data.output_dir).resolve(), Path(self.train.model_dir).resolve()
        if model == data or data in model.parents:
            raise ValueError(
                f"train.model_dir {self.train.model_dir} lies inside data.output_dir {self.data.output_dir}, "
                "which `seqsmith prepare` replaces whole: give them separate directories"
            )
        return self


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=3e-4`` -> (["train", "lr"], 0.0003); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise SeqsmithError(f"override {text!r} must look like section.key=value, e.g. train.lr=3e-4")
    try:
        return key.split("."), yaml.safe_load(value) if value else None
    except (yaml.YAMLError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error).splitlines()[0]
        raise SeqsmithError(f"override {key}: its value is not valid YAML ({reason})") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SeqsmithError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def describe_invalid(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    problems = error.errors()
    for item in problems[:_SHOWN]:
        key = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-after"))
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {_SHORT.repr(value)})"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key; check the spelling against configs/reference.yaml"
        lines.append(f"  {key or '<top>'}: {message}{shown}")
    if len(problems) > _SHOWN:
        lines.append(f"  ... and {len(problems) - _SHOWN} more")
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise SeqsmithError(describe_invalid(error, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise SeqsmithError(f"config file {path} not found (working directory: {Path.cwd()})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SeqsmithError(f"config file {path} is not valid YAML: {error}") from None
    except RecursionError:
        raise SeqsmithError(
            f"config file {path} is nested too deeply to read; a config is a few levels deep"
        ) from None
    if not isinstance(raw, dict):
        raise SeqsmithError(f"config file {path} must hold a mapping with sections data, model, train")
    source = str(path) + (f" with overrides {' '.join(overrides)}" if overrides else "")
    return config_from_dict(apply_overrides(raw, list(overrides or [])), source)


def save_config(config: Config, path: Path) -> None:
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
