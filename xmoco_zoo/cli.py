"""The ``xmoco-zoo`` command.

xmoco-zoo pretrain --config recipes/configs/mocov2_fmnist.yaml [key=value ...] [--resume]
xmoco-zoo knn local-dir:runs/mocov2_fmnist/backbone --baselines     # also stores the result beside the model
xmoco-zoo eval knn|linear|finetune --config recipes/configs/eval/NAME.yaml [key=value ...]
xmoco-zoo export runs/mocov2_fmnist OUT [--repo-id ORG/NAME] [--dtype float16]  # a run, or a checkpoint
xmoco-zoo export --to torchvision|detectron2|onnx FOLDER OUT          # docs/downstream.md
xmoco-zoo convert moco_v2_800ep_pretrain.pth.tar OUT                 # official MoCo v1/v2/v3 checkpoints
xmoco-zoo card OUT [--repo-id ORG/NAME]                              # re-render the model card
xmoco-zoo push OUT ORG/NAME [--dry-run]                              # token: HF_TOKEN or `hf auth login`
xmoco-zoo list [--hub-dir hub] [--json]                              # the published models: the zoo's index
xmoco-zoo list --write [--readme README.md]                          # rewrite results.csv, README table, models.md
xmoco-zoo plot curves runs/mocov2_fmnist [--out PNG]                # every logged term, kNN per epoch
xmoco-zoo plot compare hub/*/ --out comparison.png                   # stored results of several models
xmoco-zoo plot zoo --out zoo.png [--reference curve.json]            # kNN and linear against training minutes
xmoco-zoo methods

A mistake in the input (a config key, a path, a model spec, a checkpoint) prints one line, ``error: ...``,
and exits with status 2; add ``--debug`` (or set ``XMOCO_DEBUG=1``) for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import UserError, run_main


def _knn(args: argparse.Namespace) -> int:
    """Fashion-MNIST kNN of a model as users load it: a shortcut for the kNN recipe (protocols/knn_eval.py)."""
    from .protocols.config import load_eval_config
    from .protocols.knn_eval import run

    overrides = [
        f"model.spec={args.model}",
        "data.dataset=fashion_mnist",
        f"knn.k={args.k}",
        f"knn.temperature={args.t}",
        f"knn.baselines={str(args.baselines).lower()}",
        f"run.seed={args.seed}",
        f"run.output_dir={args.output_dir}",
        f"run.save_results={str(not args.no_save).lower()}",
    ]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    summary = run(load_eval_config("knn", None, overrides))
    rows = {args.model: summary["top1"], **summary["baselines"]}
    width = max(len(r) for r in rows)
    print(f"\nFashion-MNIST test, weighted kNN top-1 (k={args.k}, t={args.t}, bank = 60k train images):")
    for name, acc in rows.items():
        print(f"  {name:<{width}}  {acc:6.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"k": args.k, "t": args.t, "top1": rows}, f, indent=2)
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.to != "timm":
        return _export_downstream(args)
    from .export import export_checkpoint

    out = export_checkpoint(args.source, args.out, repo_id=args.repo_id, dtype=args.dtype)
    print(f"exported to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    print(f"load it with timm.create_model('local-dir:{out}', pretrained=True)")
    return 0


def _export_downstream(args: argparse.Namespace) -> int:
    """``export --to torchvision|detectron2|onnx``: from a timm folder, a run or checkpoint, or an hf-hub: spec."""
    from pathlib import Path

    from .downstream import export_downstream
    from .protocols.common import load_model

    if args.repo_id:
        raise SystemExit("xmoco-zoo export: --repo-id is for the timm export (--to timm) only")
    if args.dtype != "float32":
        raise SystemExit("xmoco-zoo export: --dtype is for the timm export (--to timm) only")
    source = Path(args.source)
    if source.is_dir():
        spec = f"local-dir:{source}" if (source / "config.json").is_file() else f"checkpoint:{source}"
    else:
        spec = args.source  # hf-hub:ORG/NAME, local-dir:PATH, checkpoint:PATH
    info = export_downstream(load_model(spec).model, args.out, args.to)
    print(json.dumps({"source": spec, **info}, indent=2))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_moco_checkpoint

    model_args = json.loads(args.model_args) if args.model_args else None
    info = convert_moco_checkpoint(
        args.source, args.out, layout=args.layout, arch=args.arch, model_args=model_args
    )
    print(json.dumps(info, indent=2))
    return 0


def _card(args: argparse.Namespace) -> int:
    from .card import write_model_card

    print(f"wrote {write_model_card(args.folder, args.repo_id)}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from .hub import push_folder

    res = push_folder(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.message,
        dry_run=args.dry_run,
    )
    total = sum(size for _, size in res.files)
    verb = "would upload" if res.dry_run else "uploaded"
    print(f"{verb} {len(res.files)} files ({total / 1e6:.2f} MB) to {res.repo_id}:")
    for name, size in res.files:
        print(f"  {name:<40} {size:>12,d} B")
    if not res.dry_run:
        print(f"done: {res.url} (commit {res.commit})")
    return 0


def _list(args: argparse.Namespace) -> int:
    """The zoo's index (xmoco_zoo/zoo.py); ``--write`` also rewrites hub/results.csv, the README's table and the
    models page's sections."""
    from pathlib import Path

    from .zoo import MODELS_PAGE, format_table, index_rows, rows_json, write_index

    if args.write:
        page = args.models_page
        if page is None and not args.no_models_page:  # the README's docs/models.md, when it has one
            page = Path(args.readme).parent / MODELS_PAGE
            page = page if page.is_file() else None
        if args.no_readme or args.no_models_page:
            page = None
        rows, changed = write_index(args.hub_dir, None if args.no_readme else args.readme, page)
    else:
        rows, changed = index_rows(args.hub_dir), []
    print(json.dumps(rows_json(rows), indent=2) if args.json else format_table(rows))
    if args.write:
        print(
            f"\nwrote {', '.join(map(str, changed))}" if changed else "\nthe index was up to date",
            file=sys.stderr,
        )
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .plots import plot_comparison, plot_training

    if args.what == "curves":
        out, keys = plot_training(args.run, args.out)
        print(f"wrote {out}: {', '.join(keys)}")
    elif args.what == "zoo":
        from .plots import plot_zoo

        out, drawn, skipped = plot_zoo(args.hub_dir, args.out, args.reference)
        print(
            f"wrote {out}: {len(drawn)} model(s)"
            + (f"; no training minutes: {', '.join(skipped)}" if skipped else "")
        )
        # the time-to-accuracy claim, point by point (kNN, the same protocol on both sides)
        if args.reference:
            from .zoo import (
                REFERENCE_SCALE,
                compare_with_reference,
                index_rows,
                on_one_scale,
                read_reference_curve,
            )

            rows, curve = index_rows(args.hub_dir), read_reference_curve(args.reference)
            lines = compare_with_reference(rows, curve)
            if on_one_scale(rows, curve)[2] == REFERENCE_SCALE:  # and the minutes as the runs measured them
                lines += ["", *compare_with_reference(rows, curve, measured=True)]
            print("\n".join(lines))
    else:
        if args.names and len(args.names) != len(args.folders):
            raise UserError(
                f"--names: {len(args.names)} names for {len(args.folders)} folders; give one per folder"
            )
        out, records = plot_comparison(args.folders, args.out, args.names)
        print(f"wrote {out}: {len(records)} result(s) from {len(args.folders)} model(s)")
    return 0


EVALS = {"knn": "knn_eval", "linear": "linear_eval", "finetune": "finetune"}


def _eval(argv: list[str]) -> int:
    """``xmoco-zoo eval PROTOCOL ...``: the evaluation recipes (recipes/knn_eval.py, linear_eval.py, finetune.py)."""
    import importlib

    if not argv or argv[0] not in EVALS:
        got = f"{argv[0]!r}" if argv else "nothing"
        raise UserError(
            f"xmoco-zoo eval: got {got} — use one of {', '.join(EVALS)}, e.g. xmoco-zoo eval linear "
            "--config recipes/configs/eval/linear_fmnist.yaml model.spec=local-dir:runs/mocov2_fmnist/backbone"
        )
    importlib.import_module(f".protocols.{EVALS[argv[0]]}", __package__).main(argv[1:])
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``xmoco-zoo`` command; returns its exit status (2 after a user error, see :func:`run_main`)."""
    return run_main(_main, argv)


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "pretrain":
        from .pretrain import main as pretrain

        pretrain(argv[1:])
        return 0
    if argv and argv[0] == "eval":
        return _eval(argv[1:])
    p = argparse.ArgumentParser(
        prog="xmoco-zoo",
        description="MoCo-family pretraining for timm backbones",
        epilog="A wrong input prints one `error:` line (exit status 2); --debug or XMOCO_DEBUG=1 shows the traceback.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pretrain", help="pretrain a method (same as recipes/pretrain.py)")
    sub.add_parser(
        "eval",
        help="evaluate a model: eval knn | linear | finetune --config ... (same as recipes/{knn_eval,linear_eval,finetune}.py)",
    )
    k = sub.add_parser("knn", help="kNN top-1 of a timm model on Fashion-MNIST (as users load it)")
    k.add_argument("model", help="timm model spec: local-dir:PATH, hf-hub:ORG/NAME or a timm name")
    k.add_argument(
        "--baselines",
        action="store_true",
        help="also score the same architecture at random init and raw pixels",
    )
    k.add_argument("-k", type=int, default=200)
    k.add_argument("-t", type=float, default=0.1)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--data-root", default=None)
    k.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    k.add_argument("--output-dir", default="runs/eval/knn", help="the run folder (config, metrics, results)")
    k.add_argument(
        "--no-save",
        action="store_true",
        help="do not store the result (in the output folder and beside a local-dir: model)",
    )
    e = sub.add_parser(
        "export",
        help="export a training run or checkpoint as a timm Hub folder with its card, or a backbone for "
        "torchvision, detectron2 or ONNX (--to)",
    )
    e.add_argument(
        "source",
        help="a run folder (runs/X: its newest checkpoint) or runs/X/checkpoints/epoch_NNNN; with --to also a "
        "timm model folder (an export, or `xmoco-zoo convert`'s output) or hf-hub:ORG/NAME",
    )
    e.add_argument(
        "out",
        help="the folder to write (replaced if it is a previous export); with --to the file: a torchvision "
        "state dict (.pth, or .safetensors), a detectron2 .pkl, an .onnx model",
    )
    e.add_argument(
        "--to",
        default="timm",
        choices=["timm", "torchvision", "detectron2", "onnx"],
        help="the layout (default timm); torchvision and detectron2 for the ResNets torchvision defines "
        "(docs/downstream.md)",
    )
    e.add_argument("--repo-id", default=None, help="ORG/NAME the card's usage code loads from (hf-hub:)")
    e.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="the stored weights' dtype (timm loads them into a float32 model; BatchNorm statistics stay "
        "float32): float16 halves the download (the published hub/ models)",
    )
    c = sub.add_parser("convert", help="convert an official MoCo v1/v2/v3 checkpoint to a timm Hub folder")
    c.add_argument("source", help=".pth/.pth.tar (loaded with weights_only=True) or .safetensors")
    c.add_argument("out")
    c.add_argument("--layout", default="auto", choices=["auto", "mocov1", "mocov2", "mocov3"])
    c.add_argument("--arch", default=None, help="timm architecture (default: from the checkpoint)")
    c.add_argument("--model-args", default=None, help="JSON constructor kwargs, e.g. '{\"num_heads\": 12}'")
    cd = sub.add_parser("card", help="re-render a model folder's README.md from its config and results")
    cd.add_argument("folder")
    cd.add_argument("--repo-id", default=None)
    pu = sub.add_parser("push", help="push a model folder to the Hugging Face Hub")
    pu.add_argument("folder")
    pu.add_argument("repo_id", help="ORG/NAME")
    pu.add_argument("--dry-run", action="store_true", help="list the files, upload nothing")
    pu.add_argument("--private", action="store_true")
    pu.add_argument("--revision", default=None)
    pu.add_argument("--message", default=None, help="commit message")
    ls = sub.add_parser(
        "list", help="the published models (hub/): family, backbone, budget and top-1 of each"
    )
    ls.add_argument("--hub-dir", default="hub")
    ls.add_argument("--json", action="store_true", help="the rows as JSON")
    ls.add_argument(
        "--write",
        action="store_true",
        help="also write HUB_DIR/results.csv and the model table between the README's markers",
    )
    ls.add_argument("--readme", default="README.md", help="the README whose model table --write rewrites")
    ls.add_argument("--no-readme", action="store_true", help="with --write: the CSV only")
    ls.add_argument(
        "--models-page",
        default=None,
        help="the page whose per-model sections --write rewrites (default: docs/models.md beside the README, "
        "when it exists)",
    )
    ls.add_argument("--no-models-page", action="store_true", help="with --write: leave the models page alone")
    pl = sub.add_parser(
        "plot", help="PNG plots: a run's training curves, a comparison of models' results, the zoo's accuracy"
    )
    psub = pl.add_subparsers(dest="what", required=True)
    pc = psub.add_parser(
        "curves", help="every loss term, lr, momentum and kNN per epoch of a run (metrics.csv)"
    )
    pc.add_argument("run", help="a run folder (train.output_dir or run.output_dir) or its metrics.csv")
    pc.add_argument("--out", default=None, help="PNG path (default: RUN/training_curves.png)")
    pm = psub.add_parser("compare", help="bar charts of several models' stored results, with their baselines")
    pm.add_argument("folders", nargs="+", help="model folders (exports, hub/NAME) or checkpoints")
    pm.add_argument("--out", required=True, help="PNG path")
    pm.add_argument("--names", nargs="+", default=None, help="a label per folder (default: the folder names)")
    pz = psub.add_parser(
        "zoo", help="the published models' kNN and linear top-1 against training minutes, a line per family"
    )
    pz.add_argument("--hub-dir", default="hub")
    pz.add_argument("--out", required=True, help="PNG path")
    pz.add_argument(
        "--reference",
        default=None,
        help="another library's curve: a .json or .csv of (minutes, knn[, linear]) points (xmoco_zoo/zoo.py)",
    )
    sub.add_parser("methods", help="list the registered methods")
    args = p.parse_args(argv)
    handlers = {
        "knn": _knn,
        "export": _export,
        "convert": _convert,
        "card": _card,
        "push": _push,
        "list": _list,
        "plot": _plot,
    }
    if args.cmd in handlers:
        return handlers[args.cmd](args)
    if args.cmd == "methods":
        from . import methods  # noqa: F401  (registers them)
        from .registry import (
            facts,
            get_method_spec,
            get_regularizer_spec,
            list_bases,
            list_methods,
            list_regularizers,
        )

        for name in list_methods():
            print(f"{name:10s} {get_method_spec(name).description}")
        print("\nregularizers (config section method.<name>):")
        for name in list_regularizers():
            papers = ", ".join(facts(name).papers)
            print(f"  {name:8s} {get_regularizer_spec(name).description} ({papers})")
        bases, regs = ", ".join(list_bases()), ", ".join(list_regularizers())
        print(
            f"\nCompose any base ({bases}) with any regularizers ({regs}), e.g.\n"
            '  xmoco-zoo pretrain --config CONFIG method.base=mocov3 "method.regularizers=[co2,xmoco]"\n'
            "Equations, config keys and interpretive choices: docs/methods.md"
        )
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
