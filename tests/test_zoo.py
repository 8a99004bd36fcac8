"""The zoo's index (xmoco_zoo/zoo.py): rows from model folders, hub/results.csv, the README's table, `xmoco-zoo
list`, and `xmoco-zoo plot zoo`; the committed CSV and README table are what the generator writes from hub/."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from xmoco_zoo.errors import InputNotFoundError
from xmoco_zoo.experiment import load_config
from xmoco_zoo.export import export_model
from xmoco_zoo.plots import PlotError, plot_zoo
from xmoco_zoo.results import EvalRecord, git_commit
from xmoco_zoo.zoo import (
    BEGIN,
    CSV_COLUMNS,
    END,
    HUB_LIMIT_MB,
    MODELS_PAGE,
    SECTIONS_BEGIN,
    SECTIONS_END,
    ReferenceCurve,
    ZooError,
    backbone_text,
    best_by_minutes,
    compare_with_reference,
    format_table,
    index_rows,
    markdown_table,
    model_sections,
    read_reference_curve,
    readme_block,
    results_csv,
    write_index,
)

from .conftest import ROOT, TINY, run_cli

RAW = "raw pixels, L2-normalised (the floor)"
INIT = "same architecture (test_resnet), random init (seed 0)"
SCRATCH = "same architecture from scratch, same schedule"


def make_model(
    folder: Path,
    method: str,
    top1: dict[str, float],
    minutes: float | None,
    channels: list[int] | None = None,
    knn_curve: list[list[float]] | None = None,
) -> Path:
    """A model folder as `xmoco-zoo export` writes it, from a freshly initialised test_resnet (no training):
    config.json with its xmoco_zoo section, model.safetensors, training_config.yaml and results/."""
    kwargs = {"in_chans": 1, **({"channels": channels} if channels else {})}
    cfg = load_config(
        None,
        [
            *TINY,
            f"method.name={method}",
            f"model.kwargs={json.dumps(kwargs)}",
            "aug.image_size=28",
            "aug.mean=[0.3]",
            "aug.std=[0.35]",
        ],
    )
    torch.manual_seed(0)
    backbone = timm.create_model("test_resnet", num_classes=0, **kwargs)
    training = {
        "epochs": 2,
        "steps": 16,
        "batch_size": 16,
        "processes": 1,
        "command": "pretrain",
        "commit": "abc123",
    }
    if minutes is not None:  # models trained before 2026-12-02 have neither
        training |= {"train_minutes": minutes, "machine": "Test CPU, 2 threads, torch 2.x"}
    if knn_curve is not None:  # runs from 2026-12-05 on
        training["knn_curve"] = knn_curve
    baselines = {
        "knn": {RAW: 50.0, INIT: 40.0},
        "linear": {"raw pixels": 55.0, INIT: 45.0},
        "finetune": {SCRATCH: 60.0},
        "semisup_10pct": {SCRATCH: 52.0},
    }
    results = [
        EvalRecord(
            metric="top1",
            value=v,
            protocol=p,
            dataset="synthetic",
            split="test",
            command=f"eval {p}",
            commit="def456",
            baselines=baselines[p],
        )
        for p, v in top1.items()
    ]
    return export_model(
        backbone,
        folder,
        cfg,
        training=training,
        results=results,
        repo_id=f"xmoco-zoo/{folder.name}",
        card=False,
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("zoo") / "hub"
    make_model(hub / "tiny-mocov2-short", "mocov2", {"knn": 60.0, "linear": 70.0}, minutes=1.5)
    make_model(
        hub / "tiny-mocov2-long",
        "mocov2",
        {"knn": 65.0, "linear": 72.25, "finetune": 80.0, "semisup_10pct": 75.5},
        minutes=3.0,
        channels=[16, 24, 24, 48],  # test_resnet's default halved
        knn_curve=[[0.0, 40.0], [1.0, 55.0], [3.0, 64.0]],
    )
    make_model(hub / "tiny-co2-old", "co2", {"knn": 62.0}, minutes=None)
    (hub / "notes").mkdir()  # not a model folder: ignored
    return hub


def test_rows_from_the_folders_files(hub):
    rows = index_rows(hub)
    assert [r.model for r in rows] == [
        "tiny-co2-old",
        "tiny-mocov2-long",
        "tiny-mocov2-short",
    ]  # family, then kNN
    old, long, short = rows
    assert (old.family, long.family) == ("co2", "mocov2")
    assert short.backbone == "test_resnet" and long.backbone == "test_resnet, half width"
    expected = sum(
        p.numel() for p in timm.create_model("test_resnet", num_classes=0, in_chans=1).parameters()
    )
    assert short.param_count == round(expected / 1e6, 2) and long.param_count < short.param_count
    assert short.input_size == "1x28x28" and short.data == "synthetic" and short.epochs == 2
    assert short.train_minutes == 1.5 and short.machine == "Test CPU, 2 threads, torch 2.x"
    assert old.train_minutes is None and old.machine is None  # trained before minutes were recorded
    assert long.top1 == {"knn": 65.0, "linear": 72.25, "finetune": 80.0, "semisup_10pct": 75.5}
    assert old.top1 == {"knn": 62.0} and short.eval == "synthetic test" and short.commit == "abc123"
    assert short.repo_id == "xmoco-zoo/tiny-mocov2-short"
    assert index_rows(hub.parent / "nothing") == []


def test_backbone_notes_say_what_model_args_change():
    assert backbone_text(
        "resnet10t", {"in_chans": 1, "channels": [32, 64, 128, 256], "num_classes": 0}, 256
    ) == ("resnet10t, half width")
    assert backbone_text("resnet10t", {"in_chans": 1}, 512) == "resnet10t"
    assert backbone_text("test_resnet", {"channels": [64, 96, 96, 192]}, 192) == "test_resnet, double width"
    assert backbone_text("test_vit", {"num_heads": 4}, None) == "test_vit, num_heads=4"
    assert backbone_text("not_a_timm_model", {"depth": 3}, 7) == "not_a_timm_model, depth=3"


def test_the_index_of_new_exports_needs_no_timm(hub):
    """An export records timm's default width, so listing the zoo does not import timm (and torch): ~3 s saved."""
    for folder in hub.iterdir():
        if (folder / "config.json").is_file():
            meta = json.loads((folder / "config.json").read_text())["xmoco_zoo"]
            assert meta["default_num_features"] == 96  # test_resnet at its default width
    code = (
        "import sys; from xmoco_zoo.zoo import index_rows; "
        f"rows = index_rows({str(hub)!r}); print([r.backbone for r in rows]); "
        "assert 'timm' not in sys.modules and 'torch' not in sys.modules, 'imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "'test_resnet, half width'" in out.stdout


def test_results_csv_is_one_plain_line_per_model(hub):
    rows = index_rows(hub)
    table = list(csv.DictReader(io.StringIO(results_csv(rows))))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == 3
    old, long, short = table
    assert old["train_minutes"] == old["machine"] == old["linear_top1"] == ""
    assert short["train_minutes"] == "1.50" and short["knn_top1"] == "60.00" and short["param_count"]
    assert long["backbone"] == "test_resnet, half width" and long["semisup_10pct_top1"] == "75.50"


def test_readme_table_and_terminal_table(hub, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# zoo\n\n## Published models\n\ntext\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    rows, changed = write_index(hub, readme)
    assert changed == [hub / "results.csv", readme]
    assert write_index(hub, readme)[1] == []  # written once, unchanged after
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# zoo\n") and text.endswith(f"{END}\n\nafter\n")
    block = readme_block(readme)
    assert block == markdown_table(rows, tmp_path)
    lines = block.splitlines()
    rel = os.path.relpath(hub, tmp_path)
    assert (
        lines[0].startswith("Top-1 % on synthetic test")
        and f"[`{rel}/results.csv`]({rel}/results.csv)" in lines[0]
    )
    assert lines[2].startswith(
        "| model | family | backbone | params | input | data | epochs | minutes | kNN |"
    )
    assert f"| [`tiny-co2-old`]({rel}/tiny-co2-old) | co2 | test_resnet |" in block
    assert "| 2 | — | 62.00 | — | — | — |" in block  # no minutes, only kNN measured
    assert "| 2 | 1.5 | 60.00 | 70.00 | — | — |" in block
    # the baselines the results files hold: raw pixels for any model, random init / scratch per backbone
    assert "| baseline: raw pixels | — | — | — | 1x28x28 | — | — | — | 50.00 | 55.00 | — | — |" in block
    assert "| baseline: random init / from scratch | — | test_resnet, half width |" in block
    assert block.count("baseline: random init / from scratch") == 2

    terminal = format_table(rows).splitlines()
    header = terminal[0]
    for line in terminal[2:5]:  # numbers right-aligned under their heading
        assert line[header.index("kNN") + 3 - 5 : header.index("kNN") + 3] in {"62.00", "65.00", "60.00"}
    assert all("[" not in line for line in terminal)
    assert format_table([]) == "no published models (hub/ is empty)"

    readme.write_text("# no markers\n")
    with pytest.raises(ZooError, match="model table: begin"):
        write_index(hub, readme)


def test_models_page_sections_from_the_folders_files(hub, tmp_path):
    page = tmp_path / "docs" / "models.md"
    page.parent.mkdir()
    page.write_text(f"# Published models\n\nprose\n\n{SECTIONS_BEGIN}\nstale text\n{SECTIONS_END}\n\nnotes\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    rows, changed = write_index(hub, readme, page)
    assert changed[-2:] == [readme, page]  # and hub/results.csv, unless an earlier test wrote it
    assert write_index(hub, readme, page)[1] == []  # written once, unchanged after
    text = page.read_text()
    assert text.startswith("# Published models\n\nprose\n") and text.endswith(f"{SECTIONS_END}\n\nnotes\n")
    block = readme_block(page, (SECTIONS_BEGIN, SECTIONS_END))
    assert block == model_sections(rows, page.parent) and "stale text" not in block
    assert [line for line in block.splitlines() if line.startswith("### ")] == [
        f"### `{r.model}`" for r in rows
    ]
    long = block[block.index("### `tiny-mocov2-long`") : block.index("### `tiny-mocov2-short`")]
    rel = os.path.relpath(hub / "tiny-mocov2-long", page.parent)
    assert f"[`hub/tiny-mocov2-long`]({rel}) ([model card]({rel}/README.md))" in long
    assert "test_resnet, half width" in long and "2 epochs, 3.0 min of training" in long
    # every protocol measured, beside the baselines its results files hold, the floor first
    assert "| kNN | **65.00** | raw pixels 50.00, random init 40.00 |" in long
    assert "| 10 % labels | **75.50** |" in long
    assert "Pretrained at commit `abc123` with\n\n```bash\npretrain\n```" in long
    assert "40.00 (0.0 min), 55.00 (1.0 min), 64.00 (3.0 min)" in long
    old = block[block.index("### `tiny-co2-old`") : block.index("### `tiny-mocov2-long`")]
    assert "| kNN | **62.00** |" in old and "| linear |" not in old and "kNN monitor" not in old
    assert model_sections([], page.parent) == "No published models (hub/ is empty)."

    page.write_text("# no markers\n")
    with pytest.raises(ZooError, match="model sections: begin"):
        write_index(hub, readme, page)
    with pytest.raises(InputNotFoundError, match="--no-models-page"):
        write_index(hub, readme, tmp_path / "missing.md")


def test_list_cli_prints_writes_and_keeps_json(hub, tmp_path):
    proc = run_cli("list", "--hub-dir", str(hub))
    assert proc.stdout.splitlines()[0].split()[:3] == ["model", "family", "backbone"]
    assert "tiny-mocov2-long" in proc.stdout and "half width" in proc.stdout
    rows = json.loads(run_cli("list", "--hub-dir", str(hub), "--json").stdout)
    assert [r["model"] for r in rows] == ["tiny-co2-old", "tiny-mocov2-long", "tiny-mocov2-short"]
    assert rows[0]["train_minutes"] is None and rows[2]["top1"]["linear"] == 70.0
    copy = tmp_path / "hub"
    copy.mkdir()
    for folder in hub.iterdir():
        if folder.is_dir():
            (copy / folder.name).symlink_to(folder)
    proc = run_cli("list", "--hub-dir", str(copy), "--write", "--no-readme")
    assert (copy / "results.csv").read_text() == results_csv(index_rows(hub)) and "wrote" in proc.stderr
    proc = run_cli(
        "list", "--hub-dir", str(copy), "--write", "--readme", str(tmp_path / "missing.md"), check=False
    )
    assert proc.returncode == 2 and "missing.md: no such file" in proc.stderr


def test_plot_zoo_writes_a_png_with_the_reference_curve(hub, tmp_path):
    curve = tmp_path / "lightly.json"
    curve.write_text(
        json.dumps(
            {
                "label": "lightly MoCo v2",
                "machine": "Test CPU, 2 threads, torch 2.x",
                "points": [
                    {"epochs": 2, "minutes": 4.0, "knn": 63.0},
                    {"epochs": 1, "minutes": 2.0, "knn": 58.0},
                ],
            }
        )
    )
    out, drawn, skipped = plot_zoo(hub, tmp_path / "images" / "zoo.png", curve)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(drawn) == ["tiny-mocov2-long", "tiny-mocov2-short"] and skipped == ["tiny-co2-old"]
    assert [p["minutes"] for p in read_reference_curve(curve).points] == [2.0, 4.0]

    empty = tmp_path / "empty.json"  # not measured yet: our models only, and the legend says so
    empty.write_text(json.dumps({"label": "lightly MoCo v2", "points": []}))
    assert plot_zoo(hub, tmp_path / "zoo_empty.png", empty)[0].is_file()
    assert plot_zoo(hub, tmp_path / "zoo_none.png")[0].is_file()
    as_csv = tmp_path / "lightly.csv"
    as_csv.write_text("minutes,knn,linear\n2.0,58.0,\n4.0,63.0,70.5\n")
    assert (
        read_reference_curve(as_csv).points[1]["linear"] == 70.5
        and read_reference_curve(as_csv).label == "lightly"
    )
    proc = run_cli(
        "plot", "zoo", "--hub-dir", str(hub), "--out", str(tmp_path / "cli.png"), "--reference", str(as_csv)
    )
    assert (tmp_path / "cli.png").is_file() and "no training minutes: tiny-co2-old" in proc.stdout
    assert "2.0 min: lightly 58.00, ours 60.00 (tiny-mocov2-short): +2.00" in proc.stdout
    assert "ours above lightly at every one of its points: yes" in proc.stdout


def test_our_time_to_accuracy_curve_and_the_comparison_point_by_point(hub):
    rows = index_rows(hub)
    assert [r.knn_curve for r in rows if r.model == "tiny-mocov2-long"] == [
        [[0.0, 40.0], [1.0, 55.0], [3.0, 64.0]]
    ]
    # every monitor point and every model's final kNN; the best reached within each budget, where it improves
    assert best_by_minutes(rows) == [
        (0.0, 40.0, "tiny-mocov2-long"),
        (1.0, 55.0, "tiny-mocov2-long"),
        (1.5, 60.0, "tiny-mocov2-short"),
        (3.0, 64.0, "tiny-mocov2-long"),
        (3.0, 65.0, "tiny-mocov2-long"),
    ]
    ref = ReferenceCurve("peer", [{"minutes": 0.5, "knn": 30.0}, {"minutes": 2.0, "knn": 61.0}])
    lines = compare_with_reference(rows, ref)
    assert (
        lines[0]
        == "minutes: as measured (a machine speed is not recorded for every run: compare runs of one machine only)"
    )
    assert lines[2] == "    2.0 min: peer 61.00, ours 60.00 (tiny-mocov2-short): -1.00"
    assert lines[-1] == "ours above peer at every one of its points: no"
    early = ReferenceCurve("peer", [{"minutes": 0.0, "knn": 50.0}])  # before any of our runs had trained
    assert compare_with_reference(rows[1:2], early)[-1].endswith("no")


def test_label_apart_keeps_labels_of_close_points_apart_and_inside_the_axes():
    """The time-to-accuracy plot's labels: models of about the same minutes and accuracy (the zoo's ResNets all
    sit near 86 % at ~45 minutes) get labels one line apart, and a point at the right edge is labelled to its
    left, inside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xmoco_zoo.plots import label_apart

    fig, ax = plt.subplots(figsize=(5, 4))
    pts = [(10.0, 86.0, "model-a"), (10.2, 86.01, "model-b"), (10.1, 85.99, "model-c"), (1.0, 80.0, "far")]
    pts.append((20.0, 70.0, "a-model-at-the-right-edge"))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o")
    offsets = label_apart(ax, pts, fontsize=6)
    assert offsets[3] == 0.0 and offsets[4] == 0.0  # alone: not moved
    close = sorted(offsets[:3])
    assert close[2] == 0.0 and close[2] - close[1] >= 7.5 and close[1] - close[0] >= 7.5  # a line: 1.3 x 6 pt
    assert offsets[1] == 0.0 and offsets[2] == close[0]  # the highest keeps its place, the lowest goes lowest
    fig.canvas.draw()
    for text in ax.texts:
        assert text.get_window_extent().x1 <= ax.bbox.x1 + 1, text.get_text()
    sides = {t.get_text(): t.get_ha() for t in ax.texts}
    assert sides["far"] == "left" and sides["a-model-at-the-right-edge"] == "right"
    plt.close(fig)


def test_a_cards_training_command_drops_the_resume_flags():
    """A run resumed before 2026-12-06 recorded `--resume` in its command; the card and the index print the command
    that trains the model from scratch (the same run: resume is exact)."""
    from xmoco_zoo.results import training_command

    cmd = "accelerate launch --num_processes 1 recipes/pretrain.py --config c.yaml 'knn.epochs=[1,2]' train.seed=0"
    assert training_command(cmd + " --resume") == cmd
    assert (
        training_command(cmd.replace("--config", "--resume-from runs/x/checkpoints/epoch_0003 --config"))
        == cmd
    )
    assert training_command(cmd + " --resume-from=runs/x") == cmd
    assert training_command(cmd) == cmd and training_command(None) is None
    assert training_command("python x.py 'unclosed") == "python x.py 'unclosed"


def test_the_comparison_chart_draws_each_architectures_own_baseline():
    """`xmoco-zoo plot compare` over a ResNet and a ViT: their from-scratch baselines share a name but not a value,
    so each gets its line, named after its model; a baseline all models share (raw pixels) is drawn once."""
    from xmoco_zoo.plots import _baseline_lines

    def rec(value, baselines):
        return EvalRecord(metric="top1", value=value, protocol="finetune", dataset="d", split="test", command="c",
                          commit="0" * 40, baselines=baselines)  # fmt: skip

    scratch, raw = "same architecture from scratch", "raw pixels"
    rows = [("ResNet A", rec(91.9, {scratch: 88.77, raw: 83.63})), ("ResNet B", rec(91.4, {scratch: 88.77})),
            ("ViT", rec(88.7, {scratch: 80.27, raw: 83.63}))]  # fmt: skip
    assert _baseline_lines(rows) == {
        f"{scratch} (ResNet A, ResNet B)": 88.77,
        f"{scratch} (ViT)": 80.27,
        raw: 83.63,
    }
    assert _baseline_lines(rows[:2]) == {scratch: 88.77, raw: 83.63}


def test_plot_zoo_refuses_when_nothing_has_minutes(hub, tmp_path):
    only_old = tmp_path / "hub"
    only_old.mkdir()
    (only_old / "tiny-co2-old").symlink_to(hub / "tiny-co2-old")
    with pytest.raises(PlotError, match="no model in .* records its training minutes"):
        plot_zoo(only_old, tmp_path / "x.png")
    bad = tmp_path / "bad.json"
    for content, message in [
        ("{not json", "not valid JSON"),
        ('{"label": "x"}', '"points" list'),
        ('{"points": [{"minutes": 1}]}', "point 0 needs 'minutes' and 'knn'"),
        ('{"points": [{"minutes": "soon", "knn": 1}]}', "not a number"),
    ]:
        bad.write_text(content)
        with pytest.raises(ZooError, match=message):
            read_reference_curve(bad)


def test_the_committed_index_is_what_the_generator_writes():
    """hub/results.csv and the README's model table never drift from hub/: regenerate with
    `xmoco-zoo list --write` after adding a model or a result."""
    rows = index_rows(ROOT / "hub")
    assert rows, "hub/ has no models"
    assert (ROOT / "hub" / "results.csv").read_text() == results_csv(rows), "run `xmoco-zoo list --write`"
    assert readme_block(ROOT / "README.md") == markdown_table(rows, ROOT), "run `xmoco-zoo list --write`"
    page = ROOT / MODELS_PAGE
    assert readme_block(page, (SECTIONS_BEGIN, SECTIONS_END)) == model_sections(rows, page.parent), (
        "run `xmoco-zoo list --write`"
    )


def test_the_recorded_commit_is_dirty_for_changed_code_but_not_for_a_republished_hub_folder(tmp_path):
    """results.git_commit(): the commit evaluations and trainings record (and scripts/publish_fmnist.sh's clean-tree
    check). A model re-published under its name rewrites its tracked hub/ folder, which leaves the code as
    committed; any other tracked change is +dirty; outside a git checkout there is no commit."""
    assert git_commit(tmp_path) is None

    def git(*args):
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
        env["GIT_COMMITTER_EMAIL"] = "t@t"
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, env=env)

    git("init", "-q")
    (tmp_path / "hub" / "m").mkdir(parents=True)
    (tmp_path / "hub" / "m" / "README.md").write_text("card\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    sha = git("rev-parse", "HEAD").stdout.decode().strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "hub" / "m" / "README.md").write_text("card, re-published\n")
    (tmp_path / "untracked.txt").write_text("a log\n")
    assert git_commit(tmp_path) == sha
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == sha + "+dirty"


# Published before scripts/publish_fmnist.sh refused uncommitted trees: their weights or results record a commit
# ending in +dirty. The zoo's retraining replaces and retires them; no other model may join this set. Each is
# exempt only as it was (by its training's commit): a model the queue publishes under the same name is checked.
LEGACY_DIRTY = {"mocov2-resnet10t-fmnist": "b0e6bfa364e9", "mocov2-resnet10t-fmnist-20ep": "0e597fce78d3"}


def test_the_published_models_stay_under_the_size_limit_and_come_from_committed_code():
    files = [p for p in (ROOT / "hub").rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files) / 1e6
    assert total < HUB_LIMIT_MB, (
        f"hub/ holds {total:.1f} MB (limit {HUB_LIMIT_MB} MB): retire a dominated model, or export in float16"
    )
    for cfg_path in (ROOT / "hub").glob("*/config.json"):
        training = json.loads(cfg_path.read_text()).get("xmoco_zoo", {}).get("training", {})
        commit = training.get("commit") or ""
        legacy = LEGACY_DIRTY.get(cfg_path.parent.name)
        if legacy and commit.startswith(legacy):
            continue
        assert commit and not commit.endswith("+dirty"), (
            f"{cfg_path.parent.name} was trained from {commit or 'an unknown commit'}: retrain it from a committed "
            "tree (scripts/publish_fmnist.sh refuses such runs)"
        )
        for result in (cfg_path.parent / "results").glob("*.json"):
            commit = json.loads(result.read_text()).get("commit") or ""
            assert commit and not commit.endswith("+dirty"), (
                f"{result.relative_to(ROOT)} was measured from {commit or 'an unknown commit'}: evaluate again from "
                "a committed tree (scripts/publish_fmnist.sh)"
            )
