"""Pure parts of the training loop (xmoco_zoo/pretrain.py), without training."""

import itertools

from xmoco_zoo.pretrain import view_seed


def _inline_formula(seed: int, epoch: int, epoch_step: int, process_index: int) -> int:
    """The batched views' seed as the loop computed it inline before it became ``view_seed``: checkpoints
    resumed across that change must see the same views."""
    return (((seed * 1_000_003 + epoch) * 1_000_033 + epoch_step) * 1_009 + process_index) % (2**63 - 1)


def test_view_seed_keeps_the_loops_formula_and_separates_every_batch_and_process():
    cases = [(0, 0, 0, 0), (0, 1, 3, 1), (42, 99, 12_345, 7), (2**40, 10**6, 10**7, 511), (2**62, 7, 0, 3)]
    for case in cases:
        assert view_seed(*case) == _inline_formula(*case), case
    grid = list(itertools.product(range(2), range(4), range(300), range(8)))  # seed, epoch, batch, process
    seeds = [view_seed(*g) for g in grid]
    assert len(set(seeds)) == len(grid), "two batches (or two processes) would draw the same views"
    assert all(0 <= s < 2**63 - 1 for s in seeds), "torch.Generator.manual_seed takes it as is"
