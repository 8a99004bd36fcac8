"""Publishing to and pulling from the Hugging Face Hub.

- :func:`check_folder`: what must hold before a folder is pushed (the files timm needs, a headless config with
  our tag, a card whose front matter parses).
- :func:`push_folder`: ``create_repo(exist_ok=True)`` + ``upload_folder`` with huggingface_hub's own client.
  Every file is uploaded, the card included, so a changed card reaches a repo that already has a README
  (timm's ``push_to_hf_hub`` writes a README only when there is none).
- :func:`populate_hf_cache`: put a folder into a Hugging Face cache, so ``hf-hub:ORG/NAME`` loads offline
  (``HF_HUB_OFFLINE=1``), e.g. on a cluster without internet.

The index of the published models (``xmoco-zoo list``, ``hub/results.csv``) is :mod:`xmoco_zoo.zoo`.

The token comes from ``HF_TOKEN`` or the login cache (``hf auth login``), through huggingface_hub; it is never
printed or logged.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .folder import CARD, META_KEY, read_folder_config

REQUIRED_FILES = ("model.safetensors", "config.json", CARD)
# Files that never belong in a published repo.
IGNORE_PATTERNS = [".*", "**/.*", "*.tmp", "__pycache__/*", "pytorch_model.bin"]


class HubError(UserError, ValueError):
    """A model folder or repo id that cannot be published as it is."""


def check_folder(folder: str | Path) -> dict[str, Any]:
    """Validate a model folder for publishing; returns its config.json. Raises HubError naming each problem."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"{folder} is not a folder; export one with `xmoco-zoo export`")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise HubError(
            f"{folder} lacks {missing}: a published model needs {list(REQUIRED_FILES)} "
            "(`xmoco-zoo export` writes all three; `xmoco-zoo card FOLDER` re-renders the card)"
        )
    cfg = read_folder_config(folder)
    problems = []
    if cfg.get("num_classes") != 0 or cfg.get("pretrained_cfg", {}).get("num_classes") != 0:
        problems.append("num_classes must be 0 (a headless backbone) in config.json and its pretrained_cfg")
    pcfg = cfg.get("pretrained_cfg", {})
    for key in ("tag", "mean", "std", "input_size", "license"):
        if key not in pcfg:
            problems.append(f"pretrained_cfg has no {key!r}")
    for key in ("hf_hub_id", "url", "test_input_size"):
        if key in pcfg:
            problems.append(f"pretrained_cfg carries {key!r} from timm's default weights (stale)")
    card = ModelCard.load(folder / CARD)
    data = card.data.to_dict()
    if data.get("library_name") != "timm" or data.get("pipeline_tag") != "image-feature-extraction":
        problems.append(
            "the card's front matter needs library_name: timm and pipeline_tag: image-feature-extraction"
        )
    if problems:
        raise HubError(f"{folder} is not ready to publish: " + "; ".join(problems))
    return cfg


def _files(folder: Path) -> list[Path]:
    import fnmatch

    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not any(fnmatch.fnmatch(rel, pat) for pat in IGNORE_PATTERNS):
            out.append(p)
    return out


@dataclass
class PushResult:
    repo_id: str
    files: list[tuple[str, int]]
    dry_run: bool
    url: str | None = None
    commit: str | None = None


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    endpoint: str | None = None,
    rerender_card: bool = True,
) -> PushResult:
    """Push a model folder to ``repo_id`` (``org/name``); ``dry_run`` lists the files and uploads nothing.

    With ``rerender_card`` (default) the card is first re-rendered for ``repo_id``, so its usage code loads
    ``hf-hub:repo_id`` and its numbers are those in ``results/`` now.
    """
    from huggingface_hub import HfApi, get_token

    from .card import write_model_card

    folder = Path(folder)
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise HubError(f"repo id {repo_id!r} must be 'org/name'")
    cfg = read_folder_config(folder)
    if rerender_card and cfg.get(META_KEY):
        write_model_card(folder, repo_id)
    check_folder(folder)
    files = [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in _files(folder)]
    if dry_run:
        return PushResult(repo_id, files, dry_run=True)
    token = token or get_token()
    if not token:
        raise HubError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (or pass --dry-run to list the files)"
        )
    api = HfApi(endpoint=endpoint, token=token)
    repo = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=commit_message or f"Upload {folder.name} with xmoco-zoo",
        ignore_patterns=IGNORE_PATTERNS,
    )
    return PushResult(repo_id, files, dry_run=False, url=str(repo), commit=getattr(info, "oid", None))


def populate_hf_cache(
    folder: str | Path, repo_id: str, cache_dir: str | Path, revision: str = "main"
) -> Path:
    """Lay ``folder`` out as the cached snapshot of ``repo_id`` in a Hugging Face hub cache
    (``models--ORG--NAME/{refs,snapshots}``), so that with ``HF_HUB_CACHE=cache_dir HF_HUB_OFFLINE=1``,
    ``timm.create_model('hf-hub:ORG/NAME', pretrained=True)`` loads it without a network. Returns the snapshot."""
    folder, cache_dir = Path(folder), Path(cache_dir)
    files = _files(folder)
    digest = hashlib.sha1()
    for p in files:
        digest.update(p.relative_to(folder).as_posix().encode())
        digest.update(hashlib.sha256(p.read_bytes()).digest())
    commit = digest.hexdigest()  # 40 hex digits, stable for the same content
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for p in files:
        dest = snapshot / p.relative_to(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
