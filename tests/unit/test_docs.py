"""The README and docs/: every relative link and anchor resolves, the README stays a short door
with the spec's commands, and the moved documents left no copy behind."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools import mutation_scores

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
SPEC_COMMANDS = (
    "docker-compose up --build",
    "curl http://localhost:8101/health",
    'curl -X POST http://localhost:8101/order \\\n  -H "Content-Type: application/json" \\\n  -d \'{\n'
    '    "user_id": "user123",\n    "item": "Burger",\n    "quantity": 2\n  }\'',
    "curl http://localhost:8101/orders/550e8400-e29b-41d4-a716-446655440000",
    "curl http://localhost:8101/orders\n",
)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page, with GitHub's -1, -2 for repeated headings."""
    seen: dict[str, int] = {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            seen.setdefault(f"{base}-{count}" if count else base, 1)
    return set(seen)


def links(page: Path) -> list[str]:
    """The link targets of a page, outside fenced code blocks."""
    return LINK.findall(FENCE.sub("", page.read_text()))


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def broken(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            problems.append(f"{target}: no {_shown(resolved)}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {_shown(resolved)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path):
    assert broken(page) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Credentials (`.env`)\n\n[a](page.md#credentials-env) [b](#title)"
                    " [c](missing.md) [d](page.md#nowhere) [e](https://example.org/#x)\n"
                    "```\n[f](inside-a-fence.md)\n```\n")
    problems = broken(page)
    assert [problem.split(":")[0] for problem in problems] == ["missing.md", "page.md#nowhere"]


def test_the_docs_link_to_each_other():
    assert sum(len(links(page)) for page in PAGES) > 50


def test_the_readme_is_a_door_of_at_most_250_lines_with_the_spec_commands():
    text = (ROOT / "README.md").read_text()
    assert 150 <= len(text.splitlines()) <= 250
    missing = [command for command in SPEC_COMMANDS if command not in text]
    assert missing == []


def test_the_readme_links_every_document_in_docs():
    readme = set(links(ROOT / "README.md"))
    documents = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert documents - readme == set()


def test_the_moved_documents_left_no_copy_at_the_top():
    assert [name for name in ("GUARANTEES.md", "TESTING.md", "BENCHMARKS.md") if (ROOT / name).exists()] == []


def test_the_mutation_scores_read_the_equivalent_mutants_from_docs_testing(monkeypatch):
    monkeypatch.chdir(ROOT)  # the tool runs from the repository's root, as mutmut does
    assert len(mutation_scores.equivalents()) > 10
