"""docs/reference.md: every ``[IF n]`` / ``[ION n]`` / ``[DS n]`` citation in the repository
names a section (or an item of a section's numbered list) that exists, and nothing points at a
document outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

REFERENCE = REPO / "docs" / "reference.md"
CITATION = re.compile(r"\[(IF|ION|DS)((?: [0-9][0-9.,\- ]*)?)\]")
HEADING = re.compile(r"^#{2,4} (IF|ION|DS) ([0-9.]+?)\.? ", re.MULTILINE)
NUMBERED_ITEM = re.compile(r"^ ?(\d+)\. ", re.MULTILINE)


def _tracked_text_files() -> list[Path]:
    """The repository's tracked text files (binary fixtures and pictures skipped)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    suffixes = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg", ".in"}
    return [REPO / p for p in listed if Path(p).suffix in suffixes or p == ".ci/run"]


def _sections() -> tuple[set[tuple[str, str]], dict[tuple[str, str], set[str]]]:
    """Section numbers per part, and the item numbers listed under each section."""
    text = REFERENCE.read_text(encoding="utf-8")
    matches = list(HEADING.finditer(text))
    sections, items = set(), {}
    for k, m in enumerate(matches):
        key = (m.group(1), m.group(2))
        sections.add(key)
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        items[key] = set(NUMBERED_ITEM.findall(text[m.end() : end]))
    return sections, items


def _expand(numbers: str) -> list[str]:
    """``"7.14-15, 7.20"`` -> ``["7.14", "7.15", "7.20"]`` (range ends only)."""
    out = []
    for part in numbers.split(","):
        first, _, last = part.strip().partition("-")
        out.append(first)
        if last:
            prefix = first.rsplit(".", 1)[0] + "." if "." in first and "." not in last else ""
            out.append(prefix + last)
    return out


def _resolves(tag: str, number: str, sections, items) -> bool:
    if (tag, number) in sections:
        return True
    section, _, item = number.rpartition(".")
    return bool(section) and item in items.get((tag, section), set())


def test_reference_sections_parse():
    sections, items = _sections()
    assert ("IF", "3.2") in sections and ("ION", "15") in sections and ("DS", "8.4") in sections
    assert {"1", "10", "30"} <= items[("IF", "7")]


def test_every_citation_resolves():
    sections, items = _sections()
    unresolved, count = [], 0
    for path in _tracked_text_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in CITATION.finditer(line):
                for number in _expand(m.group(2)) if m.group(2).strip() else []:
                    count += 1
                    if not _resolves(m.group(1), number, sections, items):
                        unresolved.append(
                            f"{path.relative_to(REPO)}:{lineno}: [{m.group(1)} {number}]"
                        )
    assert count > 50, f"only {count} citations found: is the tag pattern still in use?"
    assert not unresolved, "citations without a section in docs/reference.md:\n" + "\n".join(
        unresolved
    )


def test_nothing_points_outside_the_repository():
    outside = re.compile(r"\.\./shared/|shared/spec/|shared/reference/")
    hits = [
        f"{path.relative_to(REPO)}:{lineno}"
        for path in _tracked_text_files()
        if path != Path(__file__).resolve()
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert not hits, f"paths outside the repository: {hits}"
