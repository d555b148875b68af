"""The built wheel works for a user who installs it from PyPI: `make package` runs this.

It installs the wheel from DIST into a fresh virtualenv with only the core dependencies (no
extra), checks what the wheel carries (the licence, ``py.typed``, the entry points) and that no
extra's package came along, imports ``otel_openai_retry.auto`` and checks the SDK is patched, and
runs every Python block of the README as PyPI shows it (read from the wheel's own metadata) in a
fresh process outside the source tree. A block that imports an extra's module runs after that
extra is added (``[testing]`` for the fake server, ``[langchain]`` for LangChain); every other
block must run with the core dependencies alone.

Usage: python scripts/check_wheel.py DIST
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from email.message import Message
from pathlib import Path

EXTRAS_BY_IMPORT = {
    "otel_openai_retry.testing": "testing",
    "otel_openai_retry.langchain": "langchain",
    "langchain_core": "langchain",
    "langchain_openai": "langchain",
    "langchain_community": "langchain",
    "pytest": "testing",
}
"""A block that imports one of these needs the extra; the rest need only the core."""

EXTRA_ONLY_DISTRIBUTIONS = (
    "aiohttp",
    "langchain-core",
    "langchain-openai",
    "langchain-community",
    "redis",
    "opentelemetry-exporter-otlp-proto-grpc",
    "grpcio",
)
"""Distributions that an extra brings and the core must not."""

SNIPPET_ENV = {
    # The auto import sets the SDK up; no collector listens here, so export nothing.
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}

CHECK_AUTO = """
import otel_openai_retry.auto
from pathlib import Path
from openai._base_client import AsyncAPIClient, SyncAPIClient
import otel_openai_retry
assert "site-packages" in Path(otel_openai_retry.__file__).parts, otel_openai_retry.__file__
for cls in (SyncAPIClient, AsyncAPIClient):
    assert hasattr(cls.__dict__["request"], "__wrapped__"), f"{cls.__name__}.request not patched"
print("auto import: patched")
"""


def python_blocks(readme: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)


def extras_needed(block: str) -> set[str]:
    imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", block, flags=re.MULTILINE)
    return {
        extra
        for module in imports
        for prefix, extra in EXTRAS_BY_IMPORT.items()
        if module == prefix or module.startswith(prefix + ".")
    }


def clean_env(venv: Path) -> dict[str, str]:
    """The environment without the OpenTelemetry, OpenAI and Azure settings a developer may have
    set, nor anything that points Python at the source tree or the development venv (pip's own
    settings, such as an index mirror, are kept)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "OPENAI_", "AZURE_"))
        and k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    }
    env.update(SNIPPET_ENV)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def wheel_metadata(wheel: Path) -> tuple[Message, list[str]]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(metadata)), names


def check_contents(metadata: Message, names: list[str]) -> None:
    problems = []
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("no LICENSE in the wheel's .dist-info/licenses/")
    if "otel_openai_retry/py.typed" not in names:
        problems.append("no otel_openai_retry/py.typed (the package says it is typed)")
    if metadata.get("License-Expression") != "MIT":
        problems.append(f"License-Expression is {metadata.get('License-Expression')!r}, not MIT")
    if metadata.get("Description-Content-Type") != "text/markdown":
        problems.append("the long description is not declared as Markdown")
    if not metadata.get_all("Project-URL"):
        problems.append("no Project-URL")
    if problems:
        sys.exit("FAILED: the wheel's contents:\n  " + "\n  ".join(problems))


def main(dist: Path) -> None:
    started = time.monotonic()
    (wheel,) = sorted(dist.resolve().glob("otel_openai_retry-*.whl"))
    metadata, names = wheel_metadata(wheel)
    check_contents(metadata, names)
    readme = metadata.get_payload()  # the long description, as PyPI shows it
    if not isinstance(readme, str):
        sys.exit("FAILED: the wheel's metadata has no long description")
    blocks = python_blocks(readme)
    if not blocks:
        sys.exit("FAILED: the wheel's long description (the README) has no Python block")

    with tempfile.TemporaryDirectory(prefix="otel-openai-retry-wheel-") as tmp:
        work = Path(tmp)
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = clean_env(venv)
        python = str(venv / "bin" / "python")
        pip = [python, "-m", "pip", "install", "--quiet"]

        run([*pip, str(wheel)], env, work)
        installed = run([python, "-m", "pip", "list", "--format=freeze"], env, work).splitlines()
        names_installed = {line.split("==")[0].lower().replace("_", "-") for line in installed}
        leaked = sorted(names_installed & set(EXTRA_ONLY_DISTRIBUTIONS))
        if leaked:
            sys.exit(f"FAILED: the core install brought extras' packages: {leaked}")
        # pip itself and setuptools come with every venv: not counted as what we bring
        brought = [line for line in installed if not line.startswith(("pip==", "setuptools=="))]
        size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 1e6
        print(
            f"core install: {len(brought)} distributions, {size_mb:.0f} MB venv, "
            f"none of {EXTRA_ONLY_DISTRIBUTIONS}"
        )
        print(run([python, "-c", CHECK_AUTO], env, work).strip())

        by_extras: dict[frozenset[str], list[tuple[int, str]]] = {}
        for number, block in enumerate(blocks, 1):
            by_extras.setdefault(frozenset(extras_needed(block)), []).append((number, block))
        for extras in sorted(by_extras, key=len):  # the core-only blocks first, before any extra
            if extras:
                run([*pip, f"{wheel}[{','.join(sorted(extras))}]"], env, work)
            for number, block in by_extras[extras]:
                # A block of pytest tests (the plugin's) runs as a user runs it: under pytest.
                tests = re.search(r"^def test_", block, flags=re.MULTILINE) is not None
                script = work / f"{'test_' if tests else ''}readme_block_{number}.py"
                script.write_text(block)
                command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
                run(command if tests else [python, str(script)], env, work, timeout=120)
                label = f"with [{','.join(sorted(extras))}]" if extras else "core only"
                print(f"README Python block {number}/{len(blocks)}: ran ({label})")
    print(f"{wheel.name}: checked in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
