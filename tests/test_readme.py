"""The README and the docs document what the code does."""

import re

from clipeval.data.images import STATUSES
from clipeval.paths import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in sorted((PROJECT_ROOT / "docs").glob("*.md"))}


def test_readme_shows_the_two_commands_and_stays_short():
    assert "make reproduce" in README and "make test" in README
    assert len(README.splitlines()) <= 200


def test_every_row_status_is_documented():
    missing = [status for status in STATUSES if f"`{status}`" not in DOCS["scoring.md"]]
    assert not missing, f"statuses missing from docs/scoring.md: {missing}"


def test_every_make_target_is_in_the_readme():
    targets = re.findall(r"^([a-zA-Z_-]+):.*## ", (PROJECT_ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert targets and all(f"make {target}" in README for target in targets)


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.DOTALL), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_docs_page_is_in_the_readme_map_and_every_link_resolves():
    assert DOCS and all(f"(docs/{name})" in README for name in DOCS)
    for name, text in {"README.md": README, **DOCS}.items():
        folder = PROJECT_ROOT if name == "README.md" else PROJECT_ROOT / "docs"
        for target, anchor in re.findall(r"\]\(([^)#]+\.md)(?:#([^)]*))?\)", text):
            assert (folder / target).is_file(), f"{name} links to {target}, which does not exist"
            if anchor:
                assert anchor in _anchors((folder / target).read_text()), f"{name} links to {target}#{anchor}"
