"""The registry is the one place that knows a method: a regularizer written in this file, registered here, trains
through the real loop, gets its own config section and shows in the export, with no other file touched."""

import json
from dataclasses import dataclass

import pytest
import torch

from xmoco_zoo.config import ConfigError
from xmoco_zoo.embeddings import Embeddings, Similarities
from xmoco_zoo.experiment import load_config
from xmoco_zoo.logging import read_metrics
from xmoco_zoo.registry import (
    Facts,
    facts,
    list_regularizers,
    paper_ids,
    register_regularizer,
    unregister_regularizer,
)
from xmoco_zoo.regularizers import Regularizer

from .conftest import TINY


@dataclass
class ToyConfig:
    weight: float = 0.5
    margin: float = 0.1


class Toy(Regularizer):
    """Pushes each positive similarity above 1 − margin (a hinge): a term read from the shared cache."""

    def __init__(self, base: torch.nn.Module, cfg) -> None:  # noqa: ANN001
        super().__init__()
        self.margin = cfg.toy.margin
        self.weights = {"loss_toy": cfg.toy.weight}

    def forward(self, emb: Embeddings, sims: Similarities) -> dict[str, torch.Tensor]:
        hinge = [torch.relu(1 - self.margin - sims.positive(a)).mean() for a in sims.pairs]
        return {"loss_toy": sum(hinge) / len(hinge)}


def _check(m) -> None:  # noqa: ANN001
    if m.toy.margin < 0:
        raise ConfigError("method.toy.margin must be >= 0")


@pytest.fixture
def toy():
    register_regularizer(
        "toy", Facts("Toy", ("arXiv:0000.00001",)), ToyConfig, _check, "a hinge on positives"
    )(Toy)
    yield
    unregister_regularizer("toy")


def test_a_regularizer_registered_from_a_test_file_trains_two_steps_and_is_exported(toy, tmp_path):
    from xmoco_zoo.pretrain import main

    assert "toy" in list_regularizers() and facts("toy").title == "Toy"
    args = [
        *TINY,
        "method.regularizers=[toy]",
        "method.toy.weight=0.25",
        "train.max_steps=2",
        "train.log_every=1",
    ]
    cfg = load_config(None, args)
    assert cfg.method.name == "mocov2+toy" and cfg.method.toy.weight == 0.25
    assert paper_ids(cfg.method) == ["arXiv:1911.05722", "arXiv:2003.04297", "arXiv:0000.00001"]
    with pytest.raises(ConfigError, match="margin"):
        load_config(None, [*TINY, "method.regularizers=[toy]", "method.toy.margin=-1"])
    with pytest.raises(ConfigError, match="Did you mean"):
        load_config(None, [*TINY, "method.regularizers=[toy]", "method.toy.weigth=1"])

    out = tmp_path / "run"
    summary = main([*args, "knn.enabled=false", f"train.output_dir={out}"])
    assert summary["steps"] == 2
    series = read_metrics(out / "metrics.csv")
    assert len(series["train/loss_toy"]) == 2 and "train/loss_nce" in series
    exported = json.loads((out / "backbone" / "config.json").read_text())
    assert "arXiv:0000.00001" in exported["pretrained_cfg"]["paper_ids"]
