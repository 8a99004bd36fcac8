"""Every relative link in the README and docs/ points at a file that exists and, with a ``#fragment``, at a heading
that exists there (GitHub's anchors), so moving a section cannot leave a dangling link behind."""

import re
from pathlib import Path

import pytest

from .conftest import ROOT

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def doc_files() -> list[Path]:
    """The README, docs/ and the benchmark outputs' notes (not the model cards in hub/)."""
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "benchmarks").rglob("*.md")),
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors on its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings; a repeated heading gets ``-1``, ``-2``... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    """The relative links (and images) in ``path`` whose file or anchor does not exist, as ``target: why``."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text()))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... : not ours to check offline
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file {dest}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{fragment} in {dest.name}")
    return broken


def test_slug_follows_github() -> None:
    assert slug("Export, model cards, push") == "export-model-cards-push"
    assert slug("`mocov2-resnet10t-fmnist-20ep`") == "mocov2-resnet10t-fmnist-20ep"
    assert slug("End to end: one Fashion-MNIST epoch, against lightly") == (
        "end-to-end-one-fashion-mnist-epoch-against-lightly"
    )
    assert slug("The quickstart, three runs of `bash scripts/quickstart.sh`") == (
        "the-quickstart-three-runs-of-bash-scriptsquickstartsh"
    )


def test_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Title\n\n## A section\n\n```\n## not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-section) [web](https://example.org/x) `[code](nowhere.md)`\n"
        "[gone](missing.md) [bad anchor](other.md#not-a-heading) ![img](img.png) [self](#local)\n\n## Local\n"
    )
    (tmp_path / "img.png").write_bytes(b"")
    assert broken_links(page) == [
        f"missing.md: no such file {tmp_path / 'missing.md'}",
        "other.md#not-a-heading: no heading with anchor #not-a-heading in other.md",
    ]


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []
