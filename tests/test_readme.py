"""The README's code runs as written: a user copies it before reading anything else."""

from __future__ import annotations

import re
from pathlib import Path

from .helpers import run_python

README = Path(__file__).parent.parent / "README.md"


def test_the_fake_server_snippet_runs_as_written() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (snippet,) = [block for block in blocks if "FakeOpenAIServer()" in block]
    run_python("-c", snippet, env={"OTEL_SDK_DISABLED": "true"}, timeout=120)
