"""Pull and push timm backbones over real HTTP: olah as the Hub mirror, a test-only endpoint for uploads.

Hub-facing code runs in subprocesses (huggingface_hub reads HF_ENDPOINT and friends at import time), each with
a fresh HF cache from ``hub_env``. See ``tests/hub_servers.py`` for what is (and is not: Xet) covered.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch

from .hub_servers import hub_env, make_mirror_repo, olah_server, push_endpoint, requires_olah

pytestmark = requires_olah

TOKEN = "test-token"

# argv: repo_id, expected.pt, torch threads. Loads as a user would, compares features bit for bit.
LOAD = """
import json, sys, torch, timm
from huggingface_hub import HfApi
repo_id, expected, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
ref = torch.load(expected)
model = timm.create_model('hf-hub:' + repo_id, pretrained=True).eval()
with torch.no_grad():
    out = model(ref['x'])
assert out.shape == ref['feats'].shape, (out.shape, ref['feats'].shape)
assert torch.equal(out, ref['feats']), float((out - ref['feats']).abs().max())
for k, v in ref['state_dict'].items():
    assert torch.equal(model.state_dict()[k], v), k
sha = HfApi().model_info(repo_id, revision='main').sha
print(json.dumps({'ok': True, 'sha': sha}))
"""

# argv: endpoint, token, repo_id, folder. create_repo twice (the second is the 409 'exists' path), then upload.
PUSH = """
import json, sys
from huggingface_hub import HfApi
endpoint, token, repo_id, folder = sys.argv[1:5]
api = HfApi(endpoint=endpoint, token=token)
url = api.create_repo(repo_id, exist_ok=True)
again = api.create_repo(repo_id, exist_ok=True)
info = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message='push from test')
print(json.dumps({'url': str(url), 'again': str(again), 'repo_id': url.repo_id, 'oid': info.oid}))
"""

# argv: repo_id, filename. Prints the file as served at revision 'main' (fresh cache) and the commit sha.
DOWNLOAD = """
import json, sys
from huggingface_hub import HfApi, hf_hub_download
repo_id, filename = sys.argv[1:3]
path = hf_hub_download(repo_id, filename, revision='main')
sha = HfApi().model_info(repo_id, revision='main').sha
print(json.dumps({'text': open(path, encoding='utf-8').read(), 'sha': sha}))
"""


def _run(code: str, *args: str, env: dict, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    with olah_server(mirrors) as pull_url, push_endpoint(mirrors) as push_url:
        yield SimpleNamespace(
            root=root, mirrors=mirrors, pull=pull_url, push=push_url, caches=iter(range(100))
        )


def _fresh_cache(hub) -> Path:
    return hub.root / f"hf-cache-{next(hub.caches)}"


@pytest.fixture(scope="module")
def export(hub):
    """A tiny timm backbone in timm's Hub format, plus its features on a fixed input (saved to a file)."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=0).eval()
    folder = hub.root / "export"
    timm.models.save_for_hf(model, folder, safe_serialization=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = model(x)
    expected = hub.root / "expected.pt"
    torch.save({"x": x, "feats": feats, "state_dict": model.state_dict()}, expected)
    return SimpleNamespace(folder=folder, expected=expected, threads=str(torch.get_num_threads()))


def test_timm_loads_hf_hub_model_from_olah_mirror(hub, export):
    sha = make_mirror_repo(hub.mirrors, "xmoco-zoo/test-r", export.folder)
    assert (hub.mirrors / "models" / "xmoco-zoo" / "test-r" / ".git").is_dir()
    proc = _run(
        LOAD,
        "xmoco-zoo/test-r",
        str(export.expected),
        export.threads,
        env=hub_env(hub.pull, _fresh_cache(hub)),
        cwd=hub.root,
    )
    assert _last_json(proc) == {"ok": True, "sha": sha}
    assert "GET /xmoco-zoo/test-r/resolve/main/model.safetensors" in hub.pull.log()


def test_push_with_huggingface_hub_then_pull_through_olah(hub, export):
    folder = hub.root / "to-push"
    shutil.copytree(export.folder, folder)
    (folder / "README.md").write_text("---\nlibrary_name: timm\ntags:\n- timm\n---\n# pushed v1\n")
    push_env = {**hub_env(hub.push, _fresh_cache(hub)), "HF_HUB_VERBOSITY": "debug"}  # logs every request
    outputs = []

    first = _run(PUSH, hub.push, TOKEN, "xmoco-zoo/pushed", str(folder), env=push_env, cwd=hub.root)
    outputs += [first.stdout, first.stderr]
    pushed = _last_json(first)
    assert pushed["repo_id"] == "xmoco-zoo/pushed"
    assert pushed["url"] == pushed["again"] == f"{hub.push}/xmoco-zoo/pushed"

    loaded = _run(
        LOAD,
        "xmoco-zoo/pushed",
        str(export.expected),
        export.threads,
        env=hub_env(hub.pull, _fresh_cache(hub)),
        cwd=hub.root,
    )
    assert _last_json(loaded) == {"ok": True, "sha": pushed["oid"]}

    # A second upload that only changes the model card: olah serves the new README at 'main' at once.
    (folder / "README.md").write_text("---\nlibrary_name: timm\ntags:\n- timm\n---\n# pushed v2\n")
    second = _run(PUSH, hub.push, TOKEN, "xmoco-zoo/pushed", str(folder), env=push_env, cwd=hub.root)
    outputs += [second.stdout, second.stderr]
    oid2 = _last_json(second)["oid"]
    assert oid2 != pushed["oid"]
    served = _last_json(
        _run(
            DOWNLOAD, "xmoco-zoo/pushed", "README.md", env=hub_env(hub.pull, _fresh_cache(hub)), cwd=hub.root
        )
    )
    assert served == {"text": (folder / "README.md").read_text(), "sha": oid2}

    # The pushed commits are real git commits in olah's layout.
    git_log = subprocess.run(
        ["git", "log", "--format=%H %s", "main"],
        cwd=hub.mirrors / "models" / "xmoco-zoo" / "pushed",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert git_log[0] == f"{oid2} push from test" and git_log[1] == f"{pushed['oid']} push from test"

    # The push went through the legacy LFS protocol (Xet disabled) and the token never shows up anywhere.
    push_log = hub.push.log()
    assert "PUT /lfs-upload/" in push_log and "/commit/main 200" in push_log
    assert "commit/main (authenticated: True)" in first.stderr  # debug log on: the client did send a token
    for text in [*outputs, push_log, hub.pull.log()]:
        assert TOKEN not in text


def test_xmoco_zoo_push_cli_uploads_export_and_a_changed_card(hub):
    """`xmoco-zoo push` (our client code: create_repo + upload_folder) to the test endpoint, pulled back through
    olah; then a new result re-renders the card and the second push uploads it although a README exists."""
    from xmoco_zoo.backbone import create_backbone
    from xmoco_zoo.experiment import load_config
    from xmoco_zoo.export import export_model
    from xmoco_zoo.results import EvalRecord, write_result

    cfg = load_config(None, ["model.backbone=test_resnet", "data.dataset=synthetic", "aug.image_size=32"])
    torch.manual_seed(0)
    backbone = create_backbone("test_resnet").eval()
    folder = export_model(backbone, hub.root / "xmoco-export", cfg, training={"epochs": 1, "steps": 3})
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = hub.root / "xmoco-expected.pt"
    with torch.no_grad():
        torch.save({"x": x, "feats": backbone(x), "state_dict": backbone.state_dict()}, expected)
    cli = [sys.executable, "-m", "xmoco_zoo.cli", "push", str(folder), "xmoco-zoo/cli-pushed"]
    env = {**hub_env(hub.push, _fresh_cache(hub)), "HF_TOKEN": TOKEN}

    first = subprocess.run(cli, env=env, cwd=hub.root, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr[-4000:]
    assert "uploaded 4 files" in first.stdout  # no results yet
    assert "Not evaluated" in (folder / "README.md").read_text()
    assert "hf-hub:xmoco-zoo/cli-pushed" in (folder / "README.md").read_text()  # re-rendered for the repo
    _run(
        LOAD,
        "xmoco-zoo/cli-pushed",
        str(expected),
        str(torch.get_num_threads()),
        env=hub_env(hub.pull, _fresh_cache(hub)),
        cwd=hub.root,
    )

    write_result(
        folder,
        EvalRecord(
            metric="top1", value=12.5, protocol="knn", dataset="synthetic", split="test", command="test"
        ),
    )
    second = subprocess.run(cli, env=env, cwd=hub.root, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-4000:]
    served = _last_json(
        _run(
            DOWNLOAD,
            "xmoco-zoo/cli-pushed",
            "README.md",
            env=hub_env(hub.pull, _fresh_cache(hub)),
            cwd=hub.root,
        )
    )
    assert "**12.50%**" in served["text"] and "Not evaluated" not in served["text"]
    assert served["text"] == (folder / "README.md").read_text()
    for text in (first.stdout, first.stderr, second.stdout, second.stderr, hub.push.log(), hub.pull.log()):
        assert TOKEN not in text


# argv: a JSON list of [repo_id, local folder]. Each published model as users load it: hf-hub: (plain and
# features_only=True) against local-dir:, bit for bit, on its own input size.
LOAD_PUBLISHED = """
import json, sys, torch, timm
torch.manual_seed(0)
out = {}
for repo_id, folder in json.loads(sys.argv[1]):
    local = timm.create_model('local-dir:' + folder, pretrained=True).eval()
    remote = timm.create_model('hf-hub:' + repo_id, pretrained=True).eval()
    pyramid = timm.create_model('hf-hub:' + repo_id, pretrained=True, features_only=True).eval()
    x = torch.randn(2, *local.pretrained_cfg['input_size'])
    with torch.no_grad():
        assert torch.equal(remote(x), local(x)), repo_id
        maps = pyramid(x)
    assert maps and all(m.shape[0] == 2 and m.dim() == 4 for m in maps), repo_id
    out[repo_id] = {'maps': len(maps), 'channels': pyramid.feature_info.channels()}
print(json.dumps(out))
"""
PUBLISHED = sorted(p for p in (Path(__file__).resolve().parents[1] / "hub").glob("*/config.json"))


@pytest.mark.skipif(not PUBLISHED, reason="no published model in hub/")
def test_every_published_model_loads_through_the_hub_mirror_also_as_a_feature_pyramid(hub):
    """hub/ as pushed, served by olah: `hf-hub:` equals `local-dir:`, and `features_only=True` gives the
    multi-scale feature maps a detection or segmentation user builds on (issue 15)."""
    pairs = []
    for cfg in PUBLISHED:
        repo_id = json.loads(cfg.read_text())["xmoco_zoo"]["repo_id"]
        make_mirror_repo(hub.mirrors, repo_id, cfg.parent)
        pairs.append([repo_id, str(cfg.parent)])
    proc = _run(LOAD_PUBLISHED, json.dumps(pairs), env=hub_env(hub.pull, _fresh_cache(hub)), cwd=hub.root)
    loaded = _last_json(proc)
    assert sorted(loaded) == sorted(r for r, _ in pairs)
    assert all(v["maps"] >= 3 for v in loaded.values())
