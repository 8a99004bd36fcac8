"""Split BatchNorm (MoCo's one-process shuffle-BN emulation) against plain BatchNorm, side by side in one run.

Three resnet18 backbones differing only in their BatchNorm layers, channels_last as our methods run:
``plain`` (ordinary BatchNorm2d, one group), ``reshape`` (MoCo's demo formulation: the batch reshaped to
(N/S, S*C, H, W) so one BatchNorm over S*C channels normalises each group; on a channels_last tensor the reshape
and its inverse are copies), and ``ours`` (:class:`xmoco_zoo.momentum.SplitBatchNorm2d`: each contiguous block of
N/S samples through the fused kernel as a free view, one ``cat``), and ``groupstats`` (no per-group call and no
``cat``: the channels_last batch viewed as (S, N/S·H·W, C), every group's statistics in one ``var_mean``, the
normalisation in one ``addcmul`` written straight into the output, and a hand-written backward of the same
shape; a candidate that was measured and not adopted). Forward + backward (the query encoder) and forward under
no_grad (the key encoder), interleaved rounds, medians, ratios to plain.

    python benchmarks/split_bn.py --threads 2                 # resnet18, 32 px, batch 256, 8 groups
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularizer_overhead import cpu_name, interleaved_medians, setting_parser  # noqa: E402

from xmoco_zoo.backbone import create_backbone  # noqa: E402
from xmoco_zoo.momentum import SplitBatchNorm2d, replace_batchnorm  # noqa: E402


class ReshapeSplitBN(nn.BatchNorm2d):
    """MoCo demo's split BN: groups are samples n % S, normalised as S*C channels of an (N/S)-sample batch."""

    def __init__(self, num_features: int, num_splits: int) -> None:
        super().__init__(num_features)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.num_splits
        mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)
        out = F.batch_norm(
            x.reshape(n // s, c * s, h, w),
            mean,
            var,
            self.weight.repeat(s),
            self.bias.repeat(s),
            True,
            0.1,
            self.eps,
        )
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
        return out.reshape(n, c, h, w)


class _GroupStatsBN(torch.autograd.Function):
    """Training-mode BatchNorm over S contiguous groups of a channels_last batch, every group at once."""

    @staticmethod
    def forward(ctx, x, weight, bias, s: int, eps: float):
        c = x.shape[1]
        xv = x.permute(0, 2, 3, 1).reshape(s, -1, c)  # a view: channels_last is NHWC in memory
        var, mean = torch.var_mean(xv, dim=1, correction=0)
        invstd = (var + eps).rsqrt_()
        scale = invstd * weight
        y = torch.empty_like(x, memory_format=torch.channels_last)
        shift = torch.addcmul(bias, mean, scale, value=-1)
        torch.addcmul(shift.unsqueeze(1), xv, scale.unsqueeze(1), out=y.permute(0, 2, 3, 1).view(s, -1, c))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.s = s
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, gy, _gmean, _gvar):
        x, weight, mean, invstd = ctx.saved_tensors
        s, c = ctx.s, x.shape[1]
        xv = x.permute(0, 2, 3, 1).reshape(s, -1, c)
        gy = gy.contiguous(memory_format=torch.channels_last)
        gv = gy.permute(0, 2, 3, 1).reshape(s, -1, c)
        count = xv.shape[1]
        sum_g = gv.sum(1)
        sum_g_xhat = ((gv * xv).sum(1) - mean * sum_g) * invstd
        scale = invstd * weight
        coef_x = -scale * invstd * sum_g_xhat / count
        const = -scale * sum_g / count - coef_x * mean
        gx = torch.empty_like(x, memory_format=torch.channels_last)
        gxv = gx.permute(0, 2, 3, 1).view(s, -1, c)
        torch.addcmul(const.unsqueeze(1), gv, scale.unsqueeze(1), out=gxv)
        gxv.addcmul_(xv, coef_x.unsqueeze(1))
        return gx, sum_g_xhat.sum(0), sum_g.sum(0), None, None


class GroupStatsSplitBN(nn.BatchNorm2d):
    """Split BN with every group's statistics in one reduction (see :class:`_GroupStatsBN`)."""

    def __init__(self, num_features: int, num_splits: int) -> None:
        super().__init__(num_features)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        x = x.contiguous(memory_format=torch.channels_last)
        y, mean, var = _GroupStatsBN.apply(x, self.weight, self.bias, s, self.eps)
        with torch.no_grad():
            count = x.numel() // (s * x.shape[1])
            self.running_mean.lerp_(mean.mean(0), 0.1)
            self.running_var.lerp_(var.mean(0) * (count / max(count - 1, 1)), 0.1)
            self.num_batches_tracked.add_(1)
        return y


KINDS = {"reshape": ReshapeSplitBN, "ours": SplitBatchNorm2d, "groupstats": GroupStatsSplitBN}


def backbone(kind: str, args) -> nn.Module:
    torch.manual_seed(0)
    b = create_backbone(args.backbone)
    if kind != "plain":
        cls = KINDS[kind]
        replace_batchnorm(b, (nn.BatchNorm2d,), lambda bn: cls(bn.num_features, args.splits))
    return b.to(memory_format=torch.channels_last).train()


def main(argv=None) -> dict:
    p = setting_parser(__doc__, rounds=15, queue=False)
    p.add_argument("--splits", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size).contiguous(
        memory_format=torch.channels_last
    )
    models = {k: backbone(k, args) for k in ("plain", *KINDS)}

    def fwd_bwd(m):
        def run() -> float:
            t0 = time.perf_counter()
            m(x).sum().backward()
            for q in m.parameters():
                q.grad = None
            return time.perf_counter() - t0

        return run

    def fwd(m):
        def run() -> float:
            t0 = time.perf_counter()
            with torch.no_grad():
                m(x)
            return time.perf_counter() - t0

        return run

    steps = {f"{k} fwd+bwd": fwd_bwd(m) for k, m in models.items()}
    steps.update({f"{k} fwd (no_grad)": fwd(m) for k, m in models.items()})
    med = interleaved_medians(steps, args.rounds, args.warmup)
    result = {
        "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "setting": f"{args.backbone}, {args.image_size} px, batch {args.batch}, {args.splits} groups, channels_last",
        "median_s": med,
        "ratio_to_plain": {k: med[k] / med[k.replace(k.split()[0], "plain", 1)] for k in med},
    }
    print(f"\n{result['setting']}; {result['machine']}")
    for k in med:
        print(f"{k:<24} {med[k]:.4f} s   {result['ratio_to_plain'][k]:.3f} x plain")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
