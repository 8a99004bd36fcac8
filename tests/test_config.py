import pytest

from xmoco_zoo.config import ConfigError, to_yaml
from xmoco_zoo.experiment import load_config

from .conftest import ROOT


def test_method_defaults_then_file_then_overrides():
    cfg = load_config(None, ["method.name=mocov3"])
    assert cfg.method.temperature == 1.0 and cfg.train.optimizer == "lars" and cfg.aug.blur_p == [1.0, 0.1]
    cfg = load_config(
        ROOT / "recipes/configs/mocov2_fmnist.yaml", ["train.epochs=7", "model.kwargs={in_chans: 1}"]
    )
    assert cfg.train.epochs == 7 and cfg.method.name == "mocov2"
    # A dict override merges into the file's dict (it does not replace it).
    assert cfg.model.kwargs == {"in_chans": 1, "channels": [32, 64, 128, 256]}
    assert cfg.method.momentum_schedule == "constant"  # from mocov2's registered defaults


def test_unknown_key_names_the_nearest_valid_one():
    with pytest.raises(ConfigError, match="Did you mean: 'epochs'") as e:
        load_config(None, ["train.epoch=3"])
    assert "train.epoch" in str(e.value)
    with pytest.raises(ConfigError, match="could not be converted"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(None, ["train.optimizer=adam"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="set aug.batched=false"):
        load_config(None, ["aug.batched=true", "data.dataset=imagefolder"])
    # A wrong key in a nested section is suggested whatever omegaconf's version (2.3 does not suggest).
    with pytest.raises(ConfigError, match="Did you mean: 'batched'"):
        load_config(None, ["aug.batchd=true"])
    with pytest.raises(ValueError, match="unknown method 'moco2'"):
        load_config(None, ["method.name=moco2"])


def test_every_shipped_config_loads_and_round_trips(tmp_path):
    configs = sorted((ROOT / "recipes/configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_config(path)
        out = tmp_path / (path.stem + ".yaml")
        out.write_text(to_yaml(cfg))
        assert load_config(out) == cfg
