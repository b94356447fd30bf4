from pathlib import Path

import pytest
import yaml

from seqsmith.config import TokenizerConfig, TransformerConfig, apply_overrides, config_from_dict, load_config
from seqsmith.errors import SeqsmithError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_valid_and_typed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "data: {train: corpus/train}\n"))
    assert config.model.arch == "transformer"
    assert config.model.d_model % config.model.heads == 0
    assert config.train.max_epochs == 10


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {train: x}\ntrain: {max_steps: 10, lerning_rate: 0.1}\n")
    with pytest.raises(SeqsmithError) as error:
        load_config(path)
    assert "train.lerning_rate" in str(error.value)
    assert str(path) in str(error.value)
    assert "unknown key" in str(error.value)


def test_wrong_type_names_value(tmp_path: Path) -> None:
    with pytest.raises(SeqsmithError) as error:
        load_config(write(tmp_path, "data: {train: x}\ntrain: {max_steps: ten}\n"))
    assert "train.max_steps" in str(error.value) and "'ten'" in str(error.value)


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("{arch: transformer, d_model: 100, heads: 3}", "heads=3 must divide d_model=100"),
        ("{arch: rnn, dropout: -0.1}", "model.rnn.dropout"),
        ("{arch: lstm}", "model"),
    ],
)
def test_impossible_model_values(tmp_path: Path, model: str, key: str) -> None:
    with pytest.raises(SeqsmithError) as error:
        load_config(write(tmp_path, f"data: {{train: x}}\nmodel: {model}\n"))
    assert key in str(error.value)


def test_cross_section_check() -> None:
    with pytest.raises(SeqsmithError, match="share_embeddings needs data.tokenizer.joint"):
        config_from_dict(
            {"data": {"train": "x", "tokenizer": {"joint": False}}, "model": {"share_embeddings": True}}
        )


def test_training_needs_a_budget() -> None:
    with pytest.raises(SeqsmithError, match="max_steps, max_epochs, max_minutes"):
        config_from_dict({"data": {"train": "x"}, "train": {"max_epochs": None}})


def test_cosine_on_a_clock_budget_alone_is_accepted() -> None:
    """The trainer fits the cosine's end to train.max_minutes (tests/test_trainer.py)."""
    timed = config_from_dict(
        {"data": {"train": "x"}, "train": {"schedule": "cosine", "max_epochs": None, "max_minutes": 30}}
    )
    assert timed.train.max_steps is None and timed.train.max_minutes == 30


def test_dotted_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {train: x}\nmodel: {arch: transformer}\n")
    config = load_config(path, ["train.lr=3e-4", "model.encoder_layers=4", "data.tokenizer.kind=char"])
    assert config.train.lr == pytest.approx(3e-4)
    assert config.model.encoder_layers == 4
    assert config.data.tokenizer.kind == "char"
    with pytest.raises(SeqsmithError) as error:
        load_config(path, ["model.heads=7"])
    assert "overrides model.heads=7" in str(error.value)


@pytest.mark.parametrize("bad", ["train.lr", "=3", "train..lr=1"])
def test_malformed_override(bad: str) -> None:
    with pytest.raises(SeqsmithError, match="section.key=value"):
        apply_overrides({}, [bad])


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(SeqsmithError, match="is a value, not a section"):
        apply_overrides({"data": {"train": "x"}}, ["data.train.path=y"])


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(SeqsmithError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(SeqsmithError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(SeqsmithError, match="must hold a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_every_shipped_config_is_valid() -> None:
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs, "configs/ should hold ready configs"
    for path in configs:
        load_config(path)


def test_reference_config_documents_every_option() -> None:
    from seqsmith.config import (
        Config,
        ConvConfig,
        DiscriminatorConfig,
        ObjectiveConfig,
        PretrainedConfig,
        RNNConfig,
        TrainSource,
        TransformConfig,
    )

    path = REPO / "configs" / "reference.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    load_config(path)
    for section, model in [
        (name, info.annotation) for name, info in Config.model_fields.items() if name != "model"
    ]:
        assert set(raw[section]) == set(model.model_fields), section  # type: ignore[union-attr]
    assert set(raw["data"]["tokenizer"]) == set(TokenizerConfig.model_fields)
    assert set(raw["model"]) == set(TransformerConfig.model_fields)
    text = path.read_text(encoding="utf-8")
    assert all(f"#   {name}:" in text for name in RNNConfig.model_fields)
    assert all(f"#   {name}:" in text for name in ConvConfig.model_fields)
    assert all(f"#   {name}:" in text for name in PretrainedConfig.model_fields)
    assert all(f"  #     {name}:" in text or f"#   - {name}:" in text for name in TrainSource.model_fields)
    for objective in ObjectiveConfig.kinds.values():
        if objective.__module__ != "seqsmith.config":
            continue  # a test's plug-in
        assert all(f"#   {name}:" in text for name in objective.model_fields if name != "kind"), objective
    start = text.index("#   discriminator: {")
    discriminator = text[start : text.index("}", start)]
    assert all(f"{name}:" in discriminator for name in DiscriminatorConfig.model_fields)
    for kind, transform in TransformConfig.kinds.items():  # each kind with its every option
        line = next(line for line in text.splitlines() if f"{{kind: {kind}," in line)
        assert all(f"{name}:" in line for name in transform.model_fields if name != "side"), kind
