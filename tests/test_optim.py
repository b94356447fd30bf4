import itertools
import math

import pytest
import torch

from seqsmith.config import TrainConfig
from seqsmith.training.optim import build_optimizer, fitted_horizon, learning_rate


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


def by_hand(name: str, start: list[float], grads: list[list[float]]) -> list[float]:
    """The update rules written out in float64: lr 0.1, betas (0.8, 0.9), momentum 0.5, weight decay 0.01
    (decoupled for AdamW, added to the gradient for the others), eps 1e-8, RMSprop's alpha 0.99."""
    lr, b1, b2, momentum, decay, eps = 0.1, 0.8, 0.9, 0.5, 0.01, 1e-8
    out = []
    for i, p in enumerate(start):
        m = v = buffer = 0.0
        for t, step_grads in enumerate(grads, start=1):
            g = step_grads[i]
            if name == "adamw":
                p *= 1 - lr * decay
            else:
                g += decay * p
            if name in ("adam", "adamw"):
                m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
                p -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
            elif name == "rmsprop":
                v = 0.99 * v + 0.01 * g * g
                buffer = momentum * buffer + g / (math.sqrt(v) + eps)
                p -= lr * buffer
            else:
                buffer = g if t == 1 else momentum * buffer + g
                p -= lr * buffer
        out.append(p)
    return out


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "sgd"])
def test_optimizers_step_by_their_rules_with_the_configured_settings(name: str) -> None:
    start, grads = [0.5, -1.0, 2.0], [[0.3, -0.2, 1.0], [-0.1, 0.4, 0.5], [0.2, 0.2, -0.3]]
    parameter = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    settings = {"optimizer": name, "lr": 0.1, "betas": (0.8, 0.9), "momentum": 0.5, "weight_decay": 0.01}
    optimizer = build_optimizer([parameter], cfg(**settings))
    for step_grads in grads:
        parameter.grad = torch.tensor(step_grads, dtype=torch.float64)
        optimizer.step()
    assert parameter.tolist() == pytest.approx(by_hand(name, start, grads), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("left", "step_seconds", "validation_seconds", "every"),
    [(100.0, 0.1, 2.0, 50), (3600.0, 0.24, 9.0, 1500)],
)
def test_a_fitted_schedule_ends_within_the_time_left(
    left: float, step_seconds: float, validation_seconds: float, every: int
) -> None:
    """Replaying the fitted steps on a clock, with a validation every ``every`` steps and a last one, uses
    nearly all of the time left but never more."""
    end = fitted_horizon(1000, left, step_seconds, validation_seconds, every)
    clock = 0.0
    for step in range(1001, end + 1):
        clock += step_seconds + (validation_seconds if step % every == 0 else 0.0)
    clock += validation_seconds
    assert 0.94 * left < clock <= left
