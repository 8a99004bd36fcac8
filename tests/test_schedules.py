import math

from xmoco_zoo.schedules import cosine_lr, momentum_at


def test_cosine_lr_warmup_and_ends():
    assert cosine_lr(0, 100, 1.0, warmup_steps=10) == 0.1
    assert cosine_lr(9, 100, 1.0, warmup_steps=10) == 1.0
    assert cosine_lr(10, 100, 1.0, warmup_steps=10) == 1.0
    assert abs(cosine_lr(100, 100, 1.0, warmup_steps=10)) < 1e-12
    assert abs(cosine_lr(55, 100, 1.0, warmup_steps=10) - 0.5) < 1e-12
    assert abs(cosine_lr(100, 100, 2.0, min_ratio=0.1) - 0.2) < 1e-12


def test_momentum_schedules():
    assert momentum_at(50, 100, 0.999) == 0.999
    assert abs(momentum_at(0, 100, 0.99, "cosine") - 0.99) < 1e-12
    assert abs(momentum_at(100, 100, 0.99, "cosine") - 1.0) < 1e-12
    assert abs(momentum_at(50, 100, 0.99, "cosine") - (1 - 0.5 * 0.01)) < 1e-12
    ms = [momentum_at(s, 100, 0.99, "cosine") for s in range(101)]
    assert all(b >= a for a, b in zip(ms, ms[1:])) and not math.isnan(sum(ms))
