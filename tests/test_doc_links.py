"""Every relative link of the README and the docs points at something that exists.

The README is a front page whose sections moved to `docs/`; a page renamed or a heading reworded
must not leave a dead link behind. Checked: `[text](target)` and `![alt](target)` outside code
(fenced blocks and `inline code` are skipped) in README.md, the top-level *.md files and every
`docs/**/*.md`. A target is a path relative to the linking file; it must exist (file or folder).
A `#anchor`, into the same page or another Markdown file, must be the slug of one of that
file's headings as GitHub makes it: lower case, punctuation other than `-` and `_` dropped,
spaces to `-`, `-1`, `-2` ... for repeats. Links with a scheme (`https:`, `mailto:`) are not
followed: nothing is fetched in the tests.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted({ROOT / "README.md", *ROOT.glob("*.md"), *(ROOT / "docs").rglob("*.md")})

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code spans."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(prose(path.read_text()))]


def problems(path: Path, root: Path = ROOT) -> list[str]:
    """One line per dead link of `path`: the target and what is missing (paths from `root`)."""
    wrong = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue                                    # https:, mailto: ...: not followed
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            shown = dest.relative_to(root) if dest.is_relative_to(root) else dest
            wrong.append(f"{target}: {shown} does not exist")
        elif anchor and dest.suffix.lower() == ".md" and anchor not in anchors(dest):
            wrong.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return wrong


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    wrong = problems(page)
    assert not wrong, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(wrong)


def test_the_readme_links_every_page_moved_out_of_it_and_the_long_references():
    """Each guide is one click from the front page."""
    readme_targets = {t.partition("#")[0] for t in links(ROOT / "README.md")}
    for page in ("docs/your-cameras.md", "docs/configuration.md", "docs/operating.md",
                 "docs/fleet.md", "docs/training.md", "docs/review.md", "docs/integrations.md",
                 "BENCHMARKS.md", "RELIABILITY.md"):
        assert page in readme_targets, f"the README does not link {page}"


def test_the_checker_finds_a_dead_file_and_a_dead_anchor(tmp_path):
    """The checker itself: what it must catch and what it must let through."""
    (tmp_path / "a.md").write_text("# Title\n\n## Use Vigil on your cameras\n\n## Title\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#use-vigil-on-your-cameras) [rep](a.md#title-1) [x](a.md#nope)\n"
                    "[gone](c.md) ![img](a.md) [web](https://example.com/x) `[code](d.md)`\n"
                    "```\n[fenced](e.md)\n# not a heading\n```\n[self](#not-a-heading)\n")
    assert problems(page, root=tmp_path) == [
        "a.md#nope: no heading #nope in a.md", "c.md: c.md does not exist",
        "#not-a-heading: no heading #not-a-heading in b.md"]
