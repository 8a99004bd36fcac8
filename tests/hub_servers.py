"""Local stand-ins for the Hugging Face Hub, so tests can pull and push over real HTTP without the internet.

Two servers, both bound to 127.0.0.1 and both backed by one folder ``mirrors`` laid out the way olah reads
local mirrors: ``<mirrors>/models/<org>/<name>`` is a git repository (branch ``main``) holding the repo's files.

* Pull side: :func:`olah_server` runs `olah <https://pypi.org/project/olah/>`_ (pinned ``olah==0.5.4``), a
  Hub mirror server, in a subprocess with ``offline = true``. With ``HF_ENDPOINT`` pointing at it,
  ``huggingface_hub`` (``hf_hub_download``, ``model_info(revision=...)``) and ``timm.create_model('hf-hub:...')``
  download over plain HTTP from the git repos. :func:`make_mirror_repo` commits a folder into that layout.
* Push side: :func:`push_endpoint` runs a small test-only server (stdlib ``http.server``, in a thread) that
  accepts ``HfApi(endpoint=...).create_repo(...)`` + ``upload_folder(...)`` / ``create_commit(...)`` and writes
  each commit as a real git commit into the same layout, so olah then serves what was pushed.

What the push endpoint implements (the requests huggingface_hub 2.4.0 makes when ``HF_HUB_DISABLE_XET=1``):

* ``POST /api/repos/create`` (JSON ``{"name", "organization", "type"?, ...}``): 200 ``{"url": ...}`` for a new
  repo (initial commit with a ``.gitattributes``, like the Hub), 409 ``{"error", "url"}`` if it exists (what
  ``create_repo(exist_ok=True)`` expects).
* ``POST /api/validate-yaml`` (JSON ``{"content", "repoType"}``): checks README.md front matter with PyYAML.
* ``POST /api/{type}s/{org}/{name}/preupload/{revision}`` (JSON ``{"files": [{"path", "sample", "size"}]}``):
  answers ``uploadMode`` ``"lfs"`` for binary (a NUL byte in the 512-byte sample), ``*.safetensors``/``*.bin``/...
  or files >= 10 MB, else ``"regular"``; ``oid`` of the file already at that revision so unchanged files are
  skipped by the client; ``shouldIgnore`` is always false (``gitIgnore`` is not applied).
* ``POST /{prefix}{org}/{name}.git/info/lfs/objects/batch`` (git-LFS batch API, ``operation == "upload"``):
  basic transfer only (no ``chunk_size``, so never multipart); objects already uploaded get no ``actions``.
* ``PUT /lfs-upload/{oid}`` (the upload ``href``; like a presigned URL it needs no token, and the client sends
  none): body checked against its sha256. ``POST {repo}.git/info/lfs/objects/verify`` (``{"oid", "size"}``).
* ``POST /api/{type}s/{org}/{name}/commit/{revision}`` (NDJSON: ``header`` then ``file`` (base64),
  ``lfsFile``, ``deletedFile``, ``deletedFolder`` lines): one git commit on that branch; ``parentCommit`` is
  checked (412 if stale); ``create_pr`` is refused (400). LFS files are stored as ordinary git blobs (no
  pointer files), which olah serves as is.
* ``GET /api/{type}s/{org}/{name}[/revision/{revision}]``: a minimal repo info (``id``, ``sha``, ``siblings``).
* ``HEAD``/``GET /{prefix}{org}/{name}/resolve/{revision}/{path}``: file download/metadata, with the Hub's
  ``X-Error-Code`` (``RepoNotFound``/``RevisionNotFound``/``EntryNotFound``) on 404, so ``file_exists`` and
  ``timm.models.push_to_hf_hub`` work against it too.

Every write endpoint requires an ``Authorization`` header (401 otherwise) but accepts any token; the server
never records headers: its request log (``url.log``) holds only method, path and status.

NOT covered: the Xet transport. huggingface_hub uploads and downloads through Xet (``hf_xet``) whenever it
is installed; these helpers only work with ``HF_HUB_DISABLE_XET=1`` (set by :func:`hub_env`), i.e. the
legacy LFS upload protocol and plain HTTP downloads. Also not covered: pull requests, branches other than
the one checked out (``main``), gated/private repos, multipart LFS uploads, ``gitIgnore``.

olah quirks (0.5.4, ``offline = true``): a missing file (or revision) of a mirrored repo is answered with
401 (``RepositoryNotFoundError`` in the client), not 404 ``EntryNotFound``; ``model_info()`` needs an explicit
``revision`` (without one olah looks for the repo in its proxy cache, not in the mirrors). Branches are read
from git on every request, so a new commit is served at once.

Hub-facing client code reads ``HF_ENDPOINT``/``HF_HUB_CACHE``/``HF_HUB_DISABLE_XET`` at import time: run it
in a subprocess with ``env=hub_env(...)``::

    with olah_server(mirrors) as pull_url, push_endpoint(mirrors) as push_url:
        code = "from huggingface_hub import HfApi; api = HfApi(endpoint=%r, token='t'); ..." % push_url
        subprocess.run([sys.executable, "-c", code], env=hub_env(push_url, tmp / "hf"), check=True)
        subprocess.run([sys.executable, "-c", load_code], env=hub_env(pull_url, tmp / "hf2"), check=True)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

OLAH_REQUIREMENT = "olah==0.5.4"
OLAH_AVAILABLE = importlib.util.find_spec("olah") is not None
requires_olah = pytest.mark.skipif(
    not OLAH_AVAILABLE, reason=f"olah is not installed (pip install '{OLAH_REQUIREMENT}')"
)

REPO_TYPES = {
    "model": "models",
    "dataset": "datasets",
    "space": "spaces",
}  # repo type -> folder / API segment
_URL_PREFIX = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}  # before org/name in web URLs
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".npz", ".npy", ".h5", ".msgpack")
_LFS_MIN_SIZE = 10 * 1024 * 1024
_GITATTRIBUTES = "".join(
    f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in (*_LFS_SUFFIXES, ".tar.gz", ".zip")
)


# --------------------------------------------------------------------------------------------------- git


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,  # the user's ~/.gitconfig (signing, hooks, autocrlf) must not apply
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="xmoco-zoo tests",
        GIT_AUTHOR_EMAIL="tests@xmoco-zoo.invalid",
        GIT_COMMITTER_NAME="xmoco-zoo tests",
        GIT_COMMITTER_EMAIL="tests@xmoco-zoo.invalid",
        LC_ALL="C",
    )
    return env


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=repo, env=_git_env(), capture_output=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.decode(errors='replace')}")
    return proc


def _split_repo_id(repo_id: str) -> tuple[str, str]:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_NAME.match(p) for p in parts) or parts[1].endswith(".git"):
        raise ValueError(f"repo_id must be ORG/NAME, got {repo_id!r}")
    return parts[0], parts[1]


def mirror_repo_dir(mirrors: Path, repo_id: str, repo_type: str = "model") -> Path:
    """Where olah looks for ``repo_id``: ``<mirrors>/models/<org>/<name>`` (a git repository)."""
    org, name = _split_repo_id(repo_id)
    return Path(mirrors) / REPO_TYPES[repo_type] / org / name


def _init_repo(repo: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        _git(repo, "init", "-q", "-b", "main")


def _head(repo: Path) -> str | None:
    proc = _git(repo, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
    return proc.stdout.decode().strip() or None


def _commit_worktree(repo: Path, message: str, allow_empty: bool = False) -> str:
    """Stage everything in the work tree (additions, changes, deletions) and commit it; return HEAD."""
    _git(repo, "add", "-A")
    changed = _git(repo, "status", "--porcelain").stdout.strip()
    head = _head(repo)
    if changed or head is None or allow_empty:
        _git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", message)
    return _head(repo)  # type: ignore[return-value]


def _clear_worktree(repo: Path) -> None:
    for child in repo.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def make_mirror_repo(
    mirrors: Path, repo_id: str, folder: Path, message: str | None = None, repo_type: str = "model"
) -> str:
    """Create or update the git repo of ``repo_id`` (a model, or ``repo_type="dataset"``) in olah's layout so
    that ``main`` holds exactly the files of ``folder`` (files no longer in ``folder`` are deleted); return the
    commit sha (the old one if nothing changed). Weights are committed as ordinary blobs, not LFS pointers."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(folder)
    repo = mirror_repo_dir(Path(mirrors), repo_id, repo_type)
    _init_repo(repo)
    _clear_worktree(repo)
    shutil.copytree(folder, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
    return _commit_worktree(repo, message or f"Update {repo_id} from {folder.name}")


# --------------------------------------------------------------------------------------------------- env


def hub_env(
    endpoint: str, cache_dir: Path, offline: bool = False, token: str | None = None
) -> dict[str, str]:
    """A copy of ``os.environ`` for a subprocess that talks to ``endpoint`` with its own, fresh Hub cache.

    ``HF_HOME`` and ``HF_HUB_CACHE`` go under ``cache_dir`` (the user's cache and stored token are never
    read or written), Xet is disabled (plain HTTP / legacy LFS, see the module docstring), telemetry and
    progress bars are off, and any inherited ``HF_TOKEN`` is dropped unless ``token`` is given."""
    cache_dir = Path(cache_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    for k in ("TRANSFORMERS_CACHE", "TORCH_HOME", "XDG_CACHE_HOME"):
        env.pop(k, None)
    env.update(
        HF_ENDPOINT=str(endpoint).rstrip("/"),
        HF_HOME=str(cache_dir / "home"),
        HF_HUB_CACHE=str(cache_dir / "hub"),
        HF_XET_CACHE=str(cache_dir / "xet"),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
        HF_HUB_DISABLE_SYMLINKS_WARNING="1",
        HF_HUB_ETAG_TIMEOUT="30",
        HF_HUB_DOWNLOAD_TIMEOUT="30",
        HF_HUB_OFFLINE="1" if offline else "0",
        TORCH_HOME=str(cache_dir / "torch"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


# --------------------------------------------------------------------------------------------------- olah


class ServerURL(str):
    """The endpoint URL (a plain ``str``) with a ``log()`` method returning what the server printed/recorded."""

    def __new__(cls, url: str, log):
        obj = super().__new__(cls, url)
        obj.log = log
        return obj


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_str(value: str) -> str:
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic-string escapes


def _wait_http(url: str, deadline: float, proc: subprocess.Popen) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means it is serving
        except OSError:
            time.sleep(0.1)
    return False


@contextlib.contextmanager
def olah_server(mirrors: Path, startup_timeout: float = 60.0) -> Iterator[ServerURL]:
    """Run olah (offline, serving ``<mirrors>``) on a free port of 127.0.0.1; yield ``http://127.0.0.1:PORT``.

    olah gets its own temporary config, proxy cache and log folder; its stdout/stderr go to a file whose
    text ``url.log()`` returns. Raises ``RuntimeError`` with that output if olah does not answer in time."""
    if not OLAH_AVAILABLE:
        raise RuntimeError(f"olah is not installed: pip install '{OLAH_REQUIREMENT}'")
    mirrors = Path(mirrors).resolve()
    (mirrors / "models").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="olah-") as tmp_str:
        tmp = Path(tmp_str)
        out_path = tmp / "olah.out"
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probing and binding: retry
            port = _free_port()
            netloc = f"127.0.0.1:{port}"
            config = tmp / "olah.toml"
            config.write_text(
                "[basic]\n"
                f'host = "127.0.0.1"\nport = {port}\n'
                f"repos-path = {_toml_str(tmp / 'repos')}\n"
                f"mirrors-path = [{_toml_str(mirrors)}]\n"
                # offline: the upstream is never contacted; point it at a closed local port all the same
                'hf-scheme = "http"\nhf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n'
                f'mirror-scheme = "http"\nmirror-netloc = "{netloc}"\nmirror-lfs-netloc = "{netloc}"\n'
                "metadata-cache-ttl = 0\n"
                "\n[accessibility]\noffline = true\n"
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "OLAH_"))}
            env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp / "hf_home"))
            with open(out_path, "wb") as out:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "olah.server",
                        "--config",
                        str(config),
                        "--log-path",
                        str(tmp / "logs"),
                    ],
                    cwd=tmp,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            url = f"http://{netloc}"
            try:
                if _wait_http(
                    url + "/api/models/olah-probe/none/revision/main",
                    time.monotonic() + startup_timeout,
                    proc,
                ):
                    break
                last_error = out_path.read_text(errors="replace")
                if proc.poll() is None or "address already in use" not in last_error.lower():
                    raise RuntimeError(
                        f"olah did not answer on {url} within {startup_timeout:g}s "
                        f"(exit code {proc.poll()}); its output:\n{last_error[-6000:]}"
                    )
            except BaseException:
                _stop(proc)
                raise
            _stop(proc)
        else:
            raise RuntimeError(f"olah could not bind a free port; its output:\n{last_error[-6000:]}")
        try:
            yield ServerURL(url, lambda: out_path.read_text(errors="replace"))
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------------- push


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


def _safe_path(path: str) -> str:
    parts = path.strip("/").split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
        raise _HubError(400, f"Invalid path in repo: {path!r}")
    return "/".join(parts)


class _PushHub:
    """The state behind :func:`push_endpoint`: the mirrors folder, uploaded LFS objects, a lock, a log."""

    def __init__(self, mirrors: Path, lfs_store: Path):
        self.mirrors = mirrors
        self.lfs_store = lfs_store
        self.lock = threading.Lock()
        self.log: list[str] = []
        self.url = ""

    def repo_dir(self, type_dir: str, org: str, name: str) -> Path:
        if not (_NAME.match(org) and _NAME.match(name)):
            raise _HubError(400, f"Invalid repo name {org}/{name}")
        return self.mirrors / type_dir / org / name

    def existing_repo(self, type_dir: str, org: str, name: str) -> Path:
        repo = self.repo_dir(type_dir, org, name)
        if not (repo / ".git").exists() or _head(repo) is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def resolve(self, repo: Path, revision: str) -> str:
        revision = unquote(revision)
        proc = _git(repo, "rev-parse", "--verify", "-q", f"{revision}^{{commit}}", check=False)
        sha = proc.stdout.decode().strip()
        if proc.returncode != 0 or not sha or revision.startswith("-"):
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def read(self, repo: Path, sha: str, path: str) -> bytes | None:
        proc = _git(repo, "cat-file", "blob", f"{sha}:{path}", check=False)
        return proc.stdout if proc.returncode == 0 else None

    def blob_sha(self, repo: Path, sha: str, path: str) -> str | None:
        proc = _git(repo, "rev-parse", "--verify", "-q", f"{sha}:{path}", check=False)
        out = proc.stdout.decode().strip()
        return out if proc.returncode == 0 and out else None

    def files(self, repo: Path, sha: str) -> list[str]:
        out = _git(repo, "ls-tree", "-r", "-z", "--name-only", sha).stdout.decode()
        return [p for p in out.split("\0") if p]

    def repo_url(self, type_dir: str, org: str, name: str) -> str:
        return f"{self.url}/{_URL_PREFIX[type_dir]}{org}/{name}"


def _upload_mode(path: str, size: int, sample: bytes) -> str:
    if size == 0:
        return "regular"
    if size >= _LFS_MIN_SIZE or path.lower().endswith(_LFS_SUFFIXES) or b"\0" in sample:
        return "lfs"
    return "regular"


def _make_handler(hub: _PushHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "xmoco-zoo-test-hub/1"

        # -- plumbing ---------------------------------------------------------------------------------
        def log_message(self, format, *args):  # noqa: A002 - never print (headers hold the token)
            pass

        def log_request(self, code="-", size="-"):
            hub.log.append(f"{self.command} {urlsplit(self.path).path} {code}")

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and not head:
                self.wfile.write(body)

        def _json(self, status: int, obj, head: bool = False, headers: dict | None = None):
            self._send(
                status,
                json.dumps(obj).encode(),
                {"Content-Type": "application/json", **(headers or {})},
                head,
            )

        def _require_auth(self):
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
                raise _HubError(401, "Invalid credentials in Authorization header")

        def _dispatch(self, method: str):
            body = self._body() if method in ("POST", "PUT") else b""
            head = method == "HEAD"
            try:
                self._route(method, urlsplit(self.path), body)
            except _HubError as e:
                headers = {"X-Error-Message": e.message}
                if e.code:
                    headers["X-Error-Code"] = e.code
                self._json(e.status, e.body or {"error": e.message}, head=head, headers=headers)
            except Exception as e:  # a bug in this test server: answer 500 with the reason, never headers
                hub.log.append(f"ERROR {type(e).__name__}: {e}")
                self._json(500, {"error": f"test hub server error: {type(e).__name__}: {e}"}, head=head)

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        # -- routes -----------------------------------------------------------------------------------
        def _route(self, method: str, url, body: bytes):
            path = unquote(url.path)
            query = parse_qs(url.query)
            seg = [s for s in url.path.split("/") if s]  # still quoted: revisions may contain %2F
            if method == "POST" and path == "/api/repos/create":
                return self._create_repo(json.loads(body or b"{}"))
            if method == "POST" and path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body or b"{}"))
            if method == "PUT" and len(seg) == 2 and seg[0] == "lfs-upload":
                return self._lfs_put(seg[1], body)
            if len(seg) >= 4 and seg[0] == "api" and seg[1] in _URL_PREFIX:
                type_dir, org, name, rest = seg[1], seg[2], seg[3], seg[4:]
                if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                    return self._preupload(type_dir, org, name, rest[1], json.loads(body or b"{}"))
                if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                    return self._commit(type_dir, org, name, rest[1], body, query)
                if method in ("GET", "HEAD") and (not rest or (len(rest) == 2 and rest[0] == "revision")):
                    return self._repo_info(type_dir, org, name, rest[1] if rest else "main", method == "HEAD")
            type_dir = "models"
            if seg and seg[0] in ("datasets", "spaces"):
                type_dir, seg = seg[0], seg[1:]
            if len(seg) >= 2 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"]:
                org, name = seg[0], seg[1][: -len(".git")]
                if method == "POST" and seg[5:] == ["batch"]:
                    return self._lfs_batch(type_dir, org, name, json.loads(body or b"{}"))
                if method == "POST" and seg[5:] == ["verify"]:
                    return self._lfs_verify(json.loads(body or b"{}"))
            if method in ("GET", "HEAD") and len(seg) >= 5 and seg[2] == "resolve":
                return self._resolve(type_dir, seg[0], seg[1], seg[3], unquote("/".join(seg[4:])), method)
            raise _HubError(404, f"Not implemented by the test hub: {method} {path}")

        def _create_repo(self, payload: dict):
            self._require_auth()
            type_dir = REPO_TYPES.get(payload.get("type") or "model")
            if type_dir is None:
                raise _HubError(400, f"Invalid repo type {payload.get('type')!r}")
            org, name = payload.get("organization"), payload.get("name") or ""
            if not org:
                raise _HubError(400, "The test hub needs repo ids of the form ORG/NAME")
            repo = hub.repo_dir(type_dir, org, name)
            url = hub.repo_url(type_dir, org, name)
            with hub.lock:
                if (repo / ".git").exists() and _head(repo) is not None:
                    raise _HubError(
                        409,
                        f"You already created this {type_dir[:-1]} repo",
                        body={"error": f"You already created this {type_dir[:-1]} repo", "url": url},
                    )
                _init_repo(repo)
                (repo / ".gitattributes").write_text(_GITATTRIBUTES)
                _commit_worktree(repo, "initial commit")
            self._json(200, {"url": url, "name": f"{org}/{name}", "id": f"{org}/{name}"})

        def _validate_yaml(self, payload: dict):
            import yaml

            content = payload.get("content") or ""
            m = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
            if m:
                try:
                    data = yaml.safe_load(m.group(1))
                except yaml.YAMLError as e:
                    raise _HubError(400, "Invalid YAML", body={"errors": [{"message": str(e)}]}) from None
                if data is not None and not isinstance(data, dict):
                    raise _HubError(
                        400, "Invalid YAML", body={"errors": [{"message": "metadata must be a mapping"}]}
                    )
            self._json(200, {"errors": [], "warnings": []})

        def _preupload(self, type_dir, org, name, revision, payload):
            self._require_auth()
            repo = hub.existing_repo(type_dir, org, name)
            sha = hub.resolve(repo, revision)
            out = []
            for f in payload.get("files", []):
                path = _safe_path(f["path"])
                mode = _upload_mode(path, int(f["size"]), base64.b64decode(f.get("sample") or ""))
                oid = None
                if mode == "regular":
                    oid = hub.blob_sha(repo, sha, path)
                else:
                    data = hub.read(repo, sha, path)
                    oid = hashlib.sha256(data).hexdigest() if data is not None else None
                out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
            self._json(200, {"files": out, "commitOid": sha})

        def _lfs_batch(self, type_dir, org, name, payload):
            self._require_auth()
            hub.existing_repo(type_dir, org, name)
            if payload.get("operation") != "upload":
                raise _HubError(400, "The test hub only implements LFS uploads")
            repo_url = hub.repo_url(type_dir, org, name)
            objects = []
            for obj in payload.get("objects", []):
                oid, size = str(obj.get("oid", "")), int(obj.get("size", -1))
                if not re.fullmatch(r"[0-9a-f]{64}", oid) or size < 0:
                    objects.append(
                        {"oid": oid, "size": max(size, 0), "error": {"code": 422, "message": "bad oid"}}
                    )
                    continue
                stored = hub.lfs_store / oid
                entry = {"oid": oid, "size": size, "authenticated": True}
                if not (stored.exists() and stored.stat().st_size == size):
                    entry["actions"] = {
                        "upload": {"href": f"{hub.url}/lfs-upload/{oid}"},
                        "verify": {"href": f"{repo_url}.git/info/lfs/objects/verify", "header": {}},
                    }
                objects.append(entry)
            self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

        def _lfs_put(self, oid: str, body: bytes):
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                raise _HubError(400, "bad oid")
            if hashlib.sha256(body).hexdigest() != oid:
                raise _HubError(400, "Uploaded content does not match its sha256")
            tmp = hub.lfs_store / f".{oid}.{threading.get_ident()}"
            tmp.write_bytes(body)
            tmp.replace(hub.lfs_store / oid)
            self._send(200)

        def _lfs_verify(self, payload: dict):
            self._require_auth()
            stored = hub.lfs_store / str(payload.get("oid", "missing"))
            if not stored.exists() or stored.stat().st_size != payload.get("size"):
                raise _HubError(404, "LFS object not found")
            self._json(200, {"success": True})

        def _commit(self, type_dir, org, name, revision, body: bytes, query):
            self._require_auth()
            if query.get("create_pr", ["0"])[0] not in ("", "0", "false"):
                raise _HubError(400, "The test hub does not implement pull requests (create_pr)")
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            if not lines or lines[0].get("key") != "header":
                raise _HubError(400, "The commit payload must start with a header line")
            header = lines[0]["value"]
            with hub.lock:
                repo = hub.existing_repo(type_dir, org, name)
                branch = unquote(revision)
                current = _git(repo, "symbolic-ref", "--short", "HEAD").stdout.decode().strip()
                if branch != current:
                    hub.resolve(repo, branch)  # 404 RevisionNotFound if it does not exist at all
                    raise _HubError(400, f"The test hub only commits to {current!r}, not {branch!r}")
                parent = header.get("parentCommit")
                if parent and parent != _head(repo):
                    raise _HubError(412, "A commit has happened since. Please refresh and try again.")
                writes: list[tuple[str, bytes]] = []
                deletes: list[tuple[str, bool]] = []
                for line in lines[1:]:
                    key, value = line.get("key"), line.get("value") or {}
                    if key == "file":
                        if value.get("encoding", "base64") != "base64":
                            raise _HubError(400, "Only base64 file content is implemented")
                        writes.append((_safe_path(value["path"]), base64.b64decode(value.get("content", ""))))
                    elif key == "lfsFile":
                        stored = hub.lfs_store / str(value.get("oid"))
                        if not stored.exists():
                            raise _HubError(422, f"LFS object {value.get('oid')} was not uploaded")
                        writes.append((_safe_path(value["path"]), stored.read_bytes()))
                    elif key in ("deletedFile", "deletedFolder"):
                        deletes.append((_safe_path(value["path"]), key == "deletedFolder"))
                    else:
                        raise _HubError(400, f"Unknown commit operation {key!r}")
                for rel, is_folder in deletes:
                    target = repo / rel
                    if is_folder and target.is_dir():
                        shutil.rmtree(target)
                    elif not is_folder and target.is_file():
                        target.unlink()
                    else:
                        raise _HubError(404, f"A file with this name doesn't exist: {rel}", "EntryNotFound")
                for rel, data in writes:
                    target = repo / rel
                    if target.is_dir():
                        shutil.rmtree(target)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                message = header.get("summary") or "Update"
                if header.get("description"):
                    message += "\n\n" + header["description"]
                sha = _commit_worktree(repo, message, allow_empty=True)
            self._json(
                200,
                {
                    "success": True,
                    "commitOid": sha,
                    "commitUrl": f"{hub.repo_url(type_dir, org, name)}/commit/{sha}",
                    "pullRequestUrl": None,
                    "commitMessage": header.get("summary"),
                },
            )

        def _repo_info(self, type_dir, org, name, revision, head: bool):
            repo = hub.existing_repo(type_dir, org, name)
            sha = hub.resolve(repo, revision)
            stamp = int(_git(repo, "show", "-s", "--format=%ct", sha).stdout.decode().strip())
            date = datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            info = {
                "_id": hashlib.sha1(f"{type_dir}/{org}/{name}".encode()).hexdigest()[:24],
                "id": f"{org}/{name}",
                "author": org,
                "sha": sha,
                "lastModified": date,
                "createdAt": date,
                "private": False,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": [{"rfilename": p} for p in hub.files(repo, sha)],
            }
            self._json(200, info, head=head)

        def _resolve(self, type_dir, org, name, revision, path, method):
            repo = hub.existing_repo(type_dir, org, name)
            sha = hub.resolve(repo, revision)
            data = hub.read(repo, sha, _safe_path(path))
            if data is None:
                raise _HubError(404, "Entry not found", "EntryNotFound")
            etag = hub.blob_sha(repo, sha, path)
            headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
            self._send(200, data, headers, head=method == "HEAD")

    return Handler


@contextlib.contextmanager
def push_endpoint(mirrors: Path) -> Iterator[ServerURL]:
    """Run the test-only upload server (a thread) for ``<mirrors>`` on 127.0.0.1; yield its URL.

    Point ``HfApi(endpoint=url, token=...)`` (or ``HF_ENDPOINT``) at it with ``HF_HUB_DISABLE_XET=1``.
    ``url.log()`` returns its request log (method, path, status per line; never headers)."""
    mirrors = Path(mirrors).resolve()
    mirrors.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="push-lfs-") as store:
        hub = _PushHub(mirrors, Path(store))
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(hub))
        server.daemon_threads = True
        hub.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, name="test-hub-push", daemon=True)
        thread.start()
        try:
            yield ServerURL(hub.url, lambda: "\n".join(hub.log))
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
