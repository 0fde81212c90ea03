"""Run the CLI in a fresh Python process and see which heavy modules it imported."""

import json
import subprocess
import sys

HEAVY = ('torch', 'transformers', 'open_clip', 'scipy', 'matplotlib')
MODEL_LIBRARIES = ('torch', 'torchvision', 'transformers', 'open_clip')


def imports_after(argv: list[str], heavy: tuple[str, ...]) -> list[str]:
    """The heavy modules a fresh process imported to run ``python -m clipeval ARGV`` (its exit status ignored)."""
    code = (f"import sys\nfrom clipeval.runs.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n"
            f"    pass\nprint(sorted(name for name in {heavy!r} if name in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(shown.strip().splitlines()[-1].replace("'", '"'))
