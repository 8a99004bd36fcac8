"""Two gloo processes against one process with the whole batch, driving the method objects directly.

One spawn of 2 CPU processes (torch.multiprocessing, a FileStore rendezvous: no port to collide on) runs
every scenario and saves its results; each test then compares them with the same computation done here in
one process on the full batch. The process group is set up the way ``accelerate launch`` / ``torchrun``
leave it; the methods are wrapped in DDP with ``broadcast_buffers=False`` as the recipe's ``prepare`` does.

BatchNorm and the equivalence: a batch-dependent normalisation makes a per-process batch differ from the full
batch by design (that is what shuffle BN is about), so the 5 methods are compared on timm's ``test_vit``
(LayerNorm only: a sample's features do not depend on the rest of the batch). MoCo v3's heads do have
BatchNorm; under 2 processes they become all-reduce BatchNorm, whose statistics are the full batch's, so
MoCo v3 is compared with BN included -- in its heads on ``test_vit`` and in the whole ResNet on
``test_resnet``. MoCo v2's shuffle BN, which cannot equal one process, is checked on its own: the keys
equal a reference that normalises each process's share of a shuffled global batch and puts them back in order.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from xmoco_zoo import create_method
from xmoco_zoo.config import TrainConfig
from xmoco_zoo.distributed import AllReduceBatchNorm, broadcast_norm_buffers, convert_sync_batchnorm
from xmoco_zoo.momentum import SplitBatchNorm2d
from xmoco_zoo.optim import create_optimizer

WORLD = 2
B = 8  # per process; the one-process run takes 2B
STEPS = 3
LR = 0.05
MOMENTUM = 0.9
VIT = ("test_vit", {"img_size": 32, "patch_size": 8})
RESNET = ("test_resnet", {})
V2 = dict(dim=32, hidden_dim=64, queue_size=40, bn_splits=4)  # 16 keys a step: the queue wraps in step 3
V3 = dict(dim=32, hidden_dim=64, pred_hidden_dim=64)
CASES = {
    "mocov2": ("mocov2", VIT, V2),
    "mocov3": ("mocov3", VIT, V3),
    "co2": ("co2", VIT, V2),
    "xmoco": ("xmoco", VIT, V2),
    "amcl": ("amcl", VIT, V2),
    "mocov3_resnet_syncbn": ("mocov3", RESNET, V3),
}
# The training comparison runs in float64: 2 x B and 2B sum in a different order, which in float32 differed by
# up to 5.4e-4 through the BatchNorms of a ResNet (an AMD EPYC, 2026-12-02); in float64 the largest difference
# measured is 6e-15 (every case), ten orders of magnitude below what a wrong statistic or gradient moves (the
# size of an update, >1e-3).
DTYPE = torch.float64
ATOL = RTOL = 1e-10
KNN_N, KNN_BATCH = 13, 4  # 13 samples in batches of 4 over 2 processes: a short, uneven last round


@contextlib.contextmanager
def _one_thread():
    """The one-process references run with one thread: 2 threads on a busy 2-core machine crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _global_batch(step: int, n: int = WORLD * B, c: int = 3, size: int = 32):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(n, c, size, size, generator=g), torch.randn(n, c, size, size, generator=g)


def _build(name: str, backbone: tuple, opts: dict, world: int) -> nn.Module:
    torch.manual_seed(0)
    model = create_method(name, backbone[0], backbone[1], **opts)
    if world > 1 and model.uses_sync_bn:  # as pretrain.py does (method.sync_bn)
        model = convert_sync_batchnorm(model, torch.device("cpu"))
    return model


def _train(case: str, rank: int, world: int) -> dict:
    """STEPS SGD steps; per step the loss terms averaged over processes; the final state."""
    name, backbone, opts = CASES[case]
    model = _build(name, backbone, opts, world).to(DTYPE)
    wrapped = model
    if world > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # broadcast_buffers deprecation (torch 2.14)
            wrapped = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    opt = create_optimizer(model, TrainConfig(optimizer="sgd", weight_decay=1e-4, sgd_momentum=0.9), LR)
    terms = []
    for step in range(STEPS):
        x1, x2 = _global_batch(step)
        n = x1.shape[0] // world
        x1, x2 = x1[rank * n : (rank + 1) * n].to(DTYPE), x2[rank * n : (rank + 1) * n].to(DTYPE)
        torch.manual_seed(100 + step)  # the shuffle / split-BN permutations draw from it
        out = wrapped(x1, x2, MOMENTUM)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        names = sorted(k for k in out if k.startswith("loss"))
        t = torch.stack([out[k].detach().double() for k in names])
        if world > 1:
            dist.all_reduce(t)
            t /= world
        terms.append(t)
    return {
        "names": names,
        "terms": torch.stack(terms),
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "n_allreduce_bn": sum(isinstance(m, AllReduceBatchNorm) for m in model.modules()),
        "n_split_bn": sum(isinstance(m, SplitBatchNorm2d) for m in model.modules()),
        "frozen_bn_trainable": any(
            p.requires_grad
            for m in model.encoder.momentum.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters()
        ),
    }


def _gather(x: torch.Tensor) -> torch.Tensor:
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def _shuffle_bn_keys(rank: int) -> dict:
    """MoCo v2 keys on test_resnet (BatchNorm in train mode) with shuffle BN across the 2 processes."""
    model = _build("mocov2", RESNET, V2, WORLD)
    x, _ = _global_batch(0)
    local = x[rank * B : (rank + 1) * B]
    torch.manual_seed(7)  # rank 0 draws the permutation from it and broadcasts it
    _, k = model.keys(local)
    with torch.no_grad():
        k_local_bn = F.normalize(model.encoder.momentum(local), dim=1)
    return {
        "keys": _gather(k),
        "keys_local_bn": _gather(k_local_bn),
        "n_split_bn": sum(isinstance(m, SplitBatchNorm2d) for m in model.modules()),
    }


def _sync_bn_layer(rank: int) -> dict:
    """One all-reduce BatchNorm layer on each process's half: outputs and input gradients (gathered)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(WORLD * B, 4, 5, 5, generator=g) * 3 + 1
    w = torch.randn(WORLD * B, 4, 5, 5, generator=g)
    bn = AllReduceBatchNorm(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-0.5, 0.5, generator=g)
    local = x[rank * B : (rank + 1) * B].clone().requires_grad_(True)
    y = bn(local)
    (y * w[rank * B : (rank + 1) * B]).sum().backward()
    # DDP would average the parameter gradients over processes; sum them to compare with the full batch.
    grads = torch.cat([bn.weight.grad, bn.bias.grad])
    dist.all_reduce(grads)
    return {
        "y": _gather(y.detach()),
        "dx": _gather(local.grad),
        "dparams": grads,
        "running_var": bn.running_var,
    }


def _norm_buffers(rank: int) -> dict:
    """MoCo v2 on test_resnet after one training forward per process: plain BN running statistics differ per
    rank (shuffle BN, broadcast_buffers=False) until broadcast_norm_buffers gives every rank rank 0's."""
    model = _build("mocov2", RESNET, V2, WORLD)
    x1, x2 = _global_batch(rank)  # a different batch on each rank
    torch.manual_seed(11)
    model(x1[:B], x2[:B], MOMENTUM)
    names = [k for k in model.state_dict() if "running_" in k or "num_batches_tracked" in k]
    before = {k: model.state_dict()[k].clone() for k in names}
    broadcast_norm_buffers(model)
    return {"before": before, "after": {k: model.state_dict()[k].clone() for k in names}}


def _accelerate_loaders(rank: int) -> dict:
    """Loaders prepared by Accelerate with drop_last off: the kNN features, and the training batch sizes."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader, TensorDataset

    from xmoco_zoo.data import EpochSampler
    from xmoco_zoo.knn import extract_features

    acc = Accelerator(cpu=True)
    assert acc.num_processes == WORLD
    g = torch.Generator().manual_seed(3)
    x = torch.randn(KNN_N, 5, generator=g)
    ds = TensorDataset(x, torch.arange(KNN_N))
    knn_loader = acc.prepare(DataLoader(ds, batch_size=KNN_BATCH))
    feats, labels = extract_features(nn.Identity(), knn_loader, acc)
    train_loader = acc.prepare(
        DataLoader(ds, batch_size=KNN_BATCH, sampler=EpochSampler(KNN_N, seed=1), drop_last=False)
    )
    train_loader.set_epoch(0)
    batches = [y.clone() for _, y in train_loader]
    return {"knn_feats": feats, "knn_labels": labels, "train_batches": batches}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ.update(
        OMP_NUM_THREADS="1",
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {case: _train(case, rank, WORLD) for case in CASES}
        results["shuffle_bn"] = _shuffle_bn_keys(rank)
        results["sync_bn_layer"] = _sync_bn_layer(rank)
        results["accelerate"] = _accelerate_loaders(rank)
        results["norm_buffers"] = _norm_buffers(rank)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Run every scenario once in 2 gloo processes; the results of rank 0 and rank 1."""
    d = tmp_path_factory.mktemp("mp")
    mp.start_processes(
        _worker, args=(str(d / "store"), str(d)), nprocs=WORLD, join=True, start_method="spawn"
    )
    return [torch.load(d / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _max_diff(a: dict, b: dict) -> tuple[float, str]:
    worst = max(
        (((a[k].double() - b[k].double()).abs().max().item(), k) for k in a if a[k].is_floating_point()),
        default=(0.0, ""),
    )
    return worst


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_equal_one_process_with_the_whole_batch(two_processes, case):
    """Loss terms at every step and the final weights (online, momentum, queues, BN statistics) agree within
    float tolerance; both ranks hold bitwise the same state."""
    r0, r1 = (r[case] for r in two_processes)
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), f"{k} differs between the ranks"

    with _one_thread():
        one = _train(case, rank=0, world=1)
    assert one["names"] == r0["names"]
    torch.testing.assert_close(r0["terms"], one["terms"], rtol=RTOL, atol=ATOL)
    assert r0["state"].keys() == one["state"].keys()
    for k, v in one["state"].items():
        if v.is_floating_point():
            torch.testing.assert_close(
                r0["state"][k], v, rtol=RTOL, atol=ATOL, msg=lambda m, k=k: f"{k}: {m}"
            )
        else:  # queue pointers, BN batch counters
            assert torch.equal(r0["state"][k], v), k
    # The queue (compared above) holds every process's keys, view by view in rank order, as one process
    # enqueues its whole batch; it has wrapped around.
    if "queue.queue" in one["state"]:
        views = 2 if case == "xmoco" else 1  # XMoCo's MoCo v2 is symmetric: both views' keys are enqueued
        assert int(r0["state"]["queue.ptr"]) == (STEPS * WORLD * B * views) % V2["queue_size"]
    moved = [k for k in one["state"] if ".momentum." in k and one["state"][k].is_floating_point()]
    assert moved, "the momentum encoder is part of the comparison"
    print(f"{case}: max |2 processes - 1 process| = {_max_diff(r0['state'], one['state'])}")


def test_moco_v3_heads_use_all_reduce_batchnorm_under_two_processes(two_processes):
    r = two_processes[0]
    for case in ("mocov3", "mocov3_resnet_syncbn"):
        assert r[case]["n_allreduce_bn"] > 0, case
        assert not r[case]["frozen_bn_trainable"], "the momentum copy's BN stays frozen after the conversion"
    # test_vit: the BN layers are the heads' (projector 1+1, momentum projector 1+1, predictor 1).
    assert r["mocov3"]["n_allreduce_bn"] == 5
    for case in ("mocov2", "co2", "xmoco", "amcl"):
        assert r[case]["n_allreduce_bn"] == 0, "MoCo v2 keeps plain BN (shuffle BN) across processes"
    one = _build("mocov3", RESNET, V3, world=1)
    assert sum(isinstance(m, AllReduceBatchNorm) for m in one.modules()) == 0
    # One layer: outputs, input and parameter gradients and running statistics are the full batch's.
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(WORLD * B, 4, 5, 5, generator=g) * 3 + 1).requires_grad_(True)
    w = torch.randn(WORLD * B, 4, 5, 5, generator=g)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-0.5, 0.5, generator=g)
    y = bn(x)
    (y * w).sum().backward()
    for r in two_processes:
        s = r["sync_bn_layer"]
        torch.testing.assert_close(s["y"], y.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s["dx"], x.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            s["dparams"], torch.cat([bn.weight.grad, bn.bias.grad]), rtol=1e-5, atol=1e-4
        )
        torch.testing.assert_close(s["running_var"], bn.running_var, rtol=1e-5, atol=1e-6)


def test_moco_v2_shuffles_keys_across_processes_and_puts_them_back(two_processes):
    """Shuffle BN: each key was normalised with the process share of a shuffled global batch it landed in,
    and comes back in its sample's position. The split-BN emulation is off under several processes."""
    r = two_processes[0]["shuffle_bn"]
    assert r["n_split_bn"] == 0
    model = _build("mocov2", RESNET, {**V2, "bn_splits": 1}, world=1)  # same weights, plain BN
    x, _ = _global_batch(0)
    torch.manual_seed(7)
    perm = torch.randperm(WORLD * B)
    ref = torch.empty(WORLD * B, V2["dim"])
    with torch.no_grad(), _one_thread():
        for p in range(WORLD):
            idx = perm[p * B : (p + 1) * B]
            ref[idx] = F.normalize(model.encoder.momentum(x[idx]), dim=1)
    torch.testing.assert_close(r["keys"], ref, rtol=1e-4, atol=1e-5)
    # ... and the shuffle mattered: per-process BN without it gives other keys.
    assert (r["keys"] - r["keys_local_bn"]).abs().max() > 1e-3
    # In one process the emulation is split BN (every BatchNorm2d split in bn_splits groups).
    assert sum(isinstance(m, SplitBatchNorm2d) for m in _build("mocov2", RESNET, V2, 1).modules()) > 0


def test_knn_features_with_a_short_uneven_last_batch_are_exact_and_in_order(two_processes):
    """13 samples, batches of 4, 2 processes: the kNN loaders do not drop the last batch; Accelerate pads the
    last round and gather_for_metrics drops the padding, so every sample comes back once, in order."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(KNN_N, 5, generator=g)
    for r in two_processes:
        a = r["accelerate"]
        assert torch.equal(a["knn_labels"], torch.arange(KNN_N))
        torch.testing.assert_close(a["knn_feats"], F.normalize(x, dim=1))


def test_training_batches_stay_equal_per_process_with_drop_last_off(two_processes):
    """With train.drop_last=false the short last batch is completed (from the epoch's first samples) so that
    both processes always hold the same batch size: the key gathers need it. Every sample is seen."""
    b0, b1 = (r["accelerate"]["train_batches"] for r in two_processes)
    assert len(b0) == len(b1) == 2  # 13 samples -> 4 batches of 4, the last one completed
    assert all(len(a) == len(b) == KNN_BATCH for a, b in zip(b0, b1))
    assert set(torch.cat(b0 + b1).tolist()) == set(range(KNN_N))


@pytest.mark.parametrize("name", ["mocov2", "amcl"])
def test_one_process_short_batch_with_split_bn(name):
    """One process, drop_last off: a last batch of 10 with bn_splits=4 trains (the split-BN groups are
    completed with the batch's first samples) and enqueues exactly its 10 keys."""
    model = create_method(name, *RESNET, **V2)
    assert any(isinstance(m, SplitBatchNorm2d) for m in model.modules())
    x1, x2 = _global_batch(0, n=10)
    with _one_thread():
        out = model(x1, x2, MOMENTUM)
        out["loss"].backward()
    assert torch.isfinite(out["loss"])
    base = model.base if name == "amcl" else model  # AMCL wraps the base in the regularizer layer
    assert int(base.queue.ptr) == 10
    if name == "amcl":
        assert all(int(q.ptr) == 10 for q in model.regularizers["amcl"].queues)


def test_bn_running_statistics_are_made_equal_across_ranks_before_knn_and_checkpoints(two_processes):
    r0, r1 = (r["norm_buffers"] for r in two_processes)
    float_keys = [k for k in r0["before"] if r0["before"][k].is_floating_point()]
    assert len(float_keys) >= 10  # online and momentum BN layers of test_resnet
    # Before: the ranks saw different data, so their per-process BN statistics differ ...
    assert max((r0["before"][k] - r1["before"][k]).abs().max().item() for k in float_keys) > 1e-3
    # ... after: every rank holds rank 0's, and rank 0's are unchanged.
    for k in r0["after"]:
        assert torch.equal(r1["after"][k], r0["before"][k]) and torch.equal(
            r0["after"][k], r0["before"][k]
        ), k
