"""The README documents what the code does."""

import re

from clipeval.data.images import STATUSES
from clipeval.paths import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()


def test_readme_shows_the_two_commands():
    assert "make reproduce" in README and "make test" in README


def test_every_row_status_is_documented():
    missing = [status for status in STATUSES if f"`{status}`" not in README]
    assert not missing, f"statuses missing from the README table: {missing}"


def test_every_make_target_is_documented():
    targets = re.findall(r"^([a-zA-Z_-]+):.*## ", (PROJECT_ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert targets and all(f"make {target}" in README for target in targets)
