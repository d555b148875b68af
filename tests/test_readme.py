"""The README's code runs as written: a user copies it before reading anything else."""

from __future__ import annotations

import re
from importlib.metadata import metadata
from pathlib import Path

import pytest

from .helpers import run_python

README = Path(__file__).parent.parent / "README.md"


def test_the_fake_server_snippet_runs_as_written() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (snippet,) = [block for block in blocks if "FakeOpenAIServer()" in block]
    run_python("-c", snippet, env={"OTEL_SDK_DISABLED": "true"}, timeout=120)


# -- the README is the PyPI page ----------------------------------------------------------------

PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
SNIPPET_ENV = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
"""The auto import sets the SDK up from the environment; no collector listens here."""


@pytest.mark.parametrize(
    "block",
    [block for block in PYTHON_BLOCKS if "FakeOpenAIServer()" not in block],
    ids=lambda block: block.strip().splitlines()[0][:40],
)
def test_every_other_python_block_runs_as_written(block: str) -> None:
    """With the fake server's snippet above, every Python block of the README runs (`make
    package` runs them again from the built wheel, with only the core dependencies)."""
    run_python("-c", block, env=SNIPPET_ENV, timeout=120)


def test_the_first_screen_speaks_to_a_user_installing_from_pypi() -> None:
    first_screen = README.read_text().split("\n## ", 1)[0]
    assert "pip install otel-openai-retry\n" in first_screen
    assert "import otel_openai_retry.auto" in first_screen
    assert "├─ attempt 1" in first_screen and "└─ attempt 3" in first_screen
    assert "make " not in first_screen  # developer commands live under Development


def test_every_link_is_absolute_and_points_into_the_projects_repository() -> None:
    """PyPI shows the README without the repository around it: a relative link breaks there.
    Links into the project use its `Repository` URL (a placeholder until one is published), and
    the file each names exists here."""
    urls = dict(
        entry.split(", ", 1) for entry in metadata("otel-openai-retry").get_all("Project-URL", [])
    )
    repository = urls["Repository"]
    assert all(url.startswith(repository) for url in urls.values()), urls
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    assert links
    relative = [link for link in links if not link.startswith(("https://", "http://"))]
    assert not relative, f"relative links break on PyPI: {relative}"
    for link in links:
        if "otel-openai-retry" in link:
            assert link.startswith(repository), link
        if link.startswith(
            (f"{repository}/blob/main/", f"{repository}/tree/main/", f"{repository}/raw/main/")
        ):
            path = link.removeprefix(repository).split("/", 3)[3].split("#")[0]
            assert (README.parent / path).exists(), f"{link}: no {path} in the repository"
