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
    with pytest.raises(
        ConfigError, match=r"knn.epochs=\[0.0\]: each mark is an epoch count in \(0, train.epochs=3\]"
    ):
        load_config(None, ["train.epochs=3", "knn.epochs=[0]"])
    with pytest.raises(ConfigError, match="knn.epochs"):
        load_config(None, ["train.epochs=3", "knn.epochs=[1,4]"])
    assert load_config(None, ["train.epochs=3", "knn.epochs=[0.25,1,3]"]).knn.epochs == [0.25, 1.0, 3.0]
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


def test_a_config_extends_another_and_states_only_what_differs(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "method: {name: mocov2, queue_size: 512, temperature: 0.2}\naug: {crop_scale: [0.3, 1.0]}\n"
        "train: {epochs: 6, output_dir: runs/base}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text(
        "extends: ../base.yaml\nmethod: {name: co2, co2: {weight: 0.1}}\naug: {crop_scale: [0.5, 1.0]}\n"
    )
    cfg = load_config(tmp_path / "sub" / "child.yaml", ["train.epochs=2"])
    assert cfg.method.name == "co2" and cfg.method.co2.weight == 0.1
    assert cfg.method.queue_size == 512 and cfg.method.temperature == 0.2  # from the base
    assert cfg.aug.crop_scale == [0.5, 1.0]  # a list replaces the base's
    assert cfg.train.output_dir == "runs/base" and cfg.train.epochs == 2  # the command line still wins
    assert "extends" not in to_yaml(cfg)


def test_the_method_configs_resolve_to_their_base_plus_their_own_keys():
    """co2/xmoco/amcl_fmnist.yaml extend mocov2_fmnist.yaml: everything but the method and the output folder is
    the baseline's, which is what makes the comparison's cells comparable."""
    base = load_config(ROOT / "recipes/configs/mocov2_fmnist.yaml")
    for name in ("co2", "xmoco", "amcl"):
        cfg = load_config(ROOT / f"recipes/configs/{name}_fmnist.yaml")
        assert cfg.method.name == name and cfg.train.output_dir == f"runs/{name}_fmnist"
        assert (cfg.model, cfg.aug, cfg.data, cfg.knn) == (base.model, base.aug, base.data, base.knn)
        assert (cfg.train.epochs, cfg.train.base_lr, cfg.train.batch_size) == (6, 0.06, 256)
        assert (cfg.method.queue_size, cfg.method.temperature) == (
            base.method.queue_size,
            base.method.temperature,
        )


@pytest.mark.parametrize(
    "text, message",
    [
        ("extends: missing.yaml\n", r"config file not found: .*missing.yaml \(extended by .*child.yaml\)"),
        ("extends: child.yaml\n", r"`extends:` makes a cycle"),
        ("extends: [a.yaml, b.yaml]\n", r"`extends:` takes the path of one YAML file"),
    ],
)
def test_a_bad_extends_says_what_is_wrong(tmp_path, text, message):
    (tmp_path / "child.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "child.yaml")
