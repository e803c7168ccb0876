"""The docs stand alone: every link and every file they name is in the
repository, and none leads outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "plugins").glob("*/README.md")]
)
#: the running server of the docs' own examples is the only address they may name
LOCAL = re.compile(r"^https?://(127\.0\.0\.1|localhost)[:/]")
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: a file the text names: `docs/upgrading.md`, tests/test_pins.py, engine/reference.py
FILE = re.compile(r"(?<![\w/.-])((?:\.\./)*[\w.-]+(?:/[\w.-]+)+\.(?:md|py|cfg|sh|toml|png))\b")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _exists(base: Path, target: str) -> bool:
    """Relative to the file's folder, or to the repository (how the text names files)."""
    for folder in (base, ROOT):
        path = (folder / target).resolve()
        if path.is_relative_to(ROOT) and path.exists():
            return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=_shown)
def test_links_stay_inside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    bad = []
    for target in LINK.findall(text):
        if LOCAL.match(target):
            continue
        if re.match(r"^[a-z]+:", target):
            bad.append(f"{target}: outside the repository")
            continue
        path = target.split("#", 1)[0]
        if path and not (doc.parent / path).resolve().is_relative_to(ROOT):
            bad.append(f"{target}: outside the repository")
        elif path and not (doc.parent / path).exists():
            bad.append(f"{target}: no such file")
    assert "../shared" not in text
    assert bad == []


@pytest.mark.parametrize("doc", [*DOCS, ROOT / "setup.cfg"], ids=_shown)
def test_every_file_named_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    missing = sorted({f for f in FILE.findall(text) if not _exists(doc.parent, f)})
    assert missing == [], f"{_shown(doc)} names files that do not exist"


def test_the_anchors_of_links_between_docs_exist() -> None:
    def anchors(path: Path) -> set[str]:
        headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
        return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}

    bad = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if "#" not in target or re.match(r"^[a-z]+:", target):
                continue
            path, anchor = target.split("#", 1)
            where = (doc.parent / path) if path else doc
            if where.suffix == ".md" and anchor not in anchors(where):
                bad.append(f"{_shown(doc)}: {target}")
    assert bad == []
