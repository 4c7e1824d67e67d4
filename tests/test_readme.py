"""The README's quick tour runs as written, and its two set-up commands are the ones CI runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_tour_runs():
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr


def test_ci_runs_the_readme_commands_verbatim():
    readme = (ROOT / "README.md").read_text().splitlines()
    for line in (ROOT / ".ci" / "commands").read_text().splitlines():
        cmd = line.split(":", 1)[1].strip()
        assert cmd in readme, cmd


def test_docs_links_resolve():
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "index.md").read_text()
    for target in re.findall(r"\]\(([^)#]+\.md)\)", text):
        base = ROOT if (ROOT / target).exists() else ROOT / "docs"
        assert (base / target).exists(), target
