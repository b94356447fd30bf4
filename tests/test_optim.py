import itertools
import math

import pytest
import torch

from seqsmith.config import TrainConfig
from seqsmith.training.optim import build_optimizer, learning_rate


def cfg(**kw: object) -> TrainConfig:
    return TrainConfig.model_validate({"max_steps": 100, **kw})


def test_inverse_sqrt_peaks_at_warmup_then_decays() -> None:
    c = cfg(schedule="inverse_sqrt", lr=1e-3, warmup_steps=100, min_lr=0.0)
    rates = [learning_rate(c, s, None, 256) for s in range(1, 1001)]
    assert max(rates) == pytest.approx(1e-3) and rates.index(max(rates)) == 99
    assert rates[399] == pytest.approx(1e-3 * math.sqrt(100 / 400))
    assert all(a < b for a, b in itertools.pairwise(rates[:100]))


def test_noam_matches_the_paper_formula() -> None:
    c = cfg(schedule="noam", lr=2.0, warmup_steps=4000)
    for step in (1, 100, 4000, 20000):
        expected = 2.0 * 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
        assert learning_rate(c, step, None, 512) == pytest.approx(expected)


def test_cosine_reaches_min_lr_at_the_end() -> None:
    c = cfg(schedule="cosine", lr=1e-3, warmup_steps=10, min_lr=1e-5)
    assert learning_rate(c, 10, 110, 256) == pytest.approx(1e-3)
    assert learning_rate(c, 60, 110, 256) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(c, 110, 110, 256) == pytest.approx(1e-5)


def test_plateau_factor_scales_constant_rate() -> None:
    c = cfg(schedule="plateau", lr=1e-3, warmup_steps=0)
    assert learning_rate(c, 50, None, 256, factor=0.25) == pytest.approx(2.5e-4)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("rmsprop", torch.optim.RMSprop),
        ("sgd", torch.optim.SGD),
    ],
)
def test_optimizers(name: str, kind: type) -> None:
    layer = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(layer.parameters(), cfg(optimizer=name, weight_decay=0.01))
    assert isinstance(optimizer, kind)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
