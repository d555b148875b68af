"""The README's code runs as written: a user copies it before reading anything else."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_the_fake_server_snippet_runs_as_written() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (snippet,) = [block for block in blocks if "FakeOpenAIServer()" in block]
    done = subprocess.run(
        [sys.executable, "-c", snippet],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"OTEL_SDK_DISABLED": "true", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
