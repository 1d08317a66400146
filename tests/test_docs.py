"""The documentation is tested: every ```python block of README.md and docs/*.md runs, and
the reference pages cover every option and command that exists."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

import uwcache
import uwcache.cache
from uwcache.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks() -> List[Tuple[str, int, str]]:
    """(file, first line, code) of every ```python block."""
    blocks = []
    for path in DOC_FILES:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            blocks.append((str(path.relative_to(ROOT)), line, match.group(1)))
    return blocks


BLOCKS = python_blocks()
DOC_CACHE_LIMIT = 32 * 2**20


@pytest.mark.parametrize("where, line, code", BLOCKS, ids=[f"{w}:{n}" for w, n, _ in BLOCKS])
def test_python_example_runs(where, line, code, namespace, tmp_path):
    """Each block runs alone, in a fresh namespace and an empty working directory."""
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, UWCACHE_NAMESPACE=namespace)
    done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (
        f"the example at {where} line {line} failed ({done.returncode}):\n{code}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    # issue 10: every snippet fits Docker's default 64 MiB /dev/shm with room to spare
    ns_dir = Path(uwcache.cache.namespace_dir(namespace))
    made = [f for f in (list(ns_dir.iterdir()) if ns_dir.is_dir() else []) + list(tmp_path.rglob("*")) if f.is_file()]
    too_big = {f.name: f.stat().st_size for f in made if f.stat().st_size > DOC_CACHE_LIMIT}
    assert not too_big, f"the example at {where} line {line} makes caches over 32 MiB: {too_big}"


def test_every_page_with_examples_is_collected():
    files = {where for where, _line, _code in BLOCKS}
    assert {"README.md", "docs/guide.md", "docs/options.md"} <= files
    assert len(BLOCKS) >= 10


def test_readme_quick_start_is_the_two_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1]
    first_block = re.search(r"^```\n(.*?)^```", quick, re.M | re.S).group(1)
    assert first_block.splitlines() == [
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/uwcache run",
        "bash .ci/run",
    ]


def _anchors(path: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces become '-'."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, re.M)}


def test_links_between_pages_resolve():
    for path in DOC_FILES:
        for target, anchor in re.findall(r"\]\(([^)#]*\.md|)(?:#([^)]*))?\)", path.read_text()):
            page = (path.parent / target) if target else path
            assert page.is_file(), f"{path.name} links to missing {target}"
            if anchor:
                assert anchor in _anchors(page), f"{path.name} links to {target}#{anchor}, which does not exist"


def _resolve(dotted: str) -> object:
    """`uwcache.a.b` -> the object, importing submodules on the way."""
    parts = dotted.split(".")
    obj: object = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if not hasattr(obj, part):
            try:
                obj = importlib.import_module(".".join(parts[: i + 1]))
                continue
            except ImportError:
                pass
        obj = getattr(obj, part)
    return obj


def test_every_uwcache_name_in_the_docs_exists():
    names = set()
    for path in DOC_FILES:
        names.update(re.findall(r"`(uwcache(?:\.[A-Za-z_]\w*)+)", path.read_text()))
    assert "uwcache.attach" in names
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except AttributeError:
            missing.append(name)
    assert not missing, f"the docs mention names that do not exist: {missing}"


def test_options_reference_covers_every_option():
    text = (ROOT / "docs" / "options.md").read_text()
    for method in (uwcache.Caching.add_cache, uwcache.Caching.set_basic_params, uwcache.Caching.add_item,
                   uwcache.Caching.add_file):
        for name in inspect.signature(method).parameters:
            if name != "self":
                assert f"`{name}`" in text, f"docs/options.md does not document {method.__name__}({name})"


def test_cli_reference_covers_every_command_and_option():
    text = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, sub in subparsers.choices.items():
        assert re.search(rf"^## `?uwcache {command}\b", text, re.M), f"docs/cli.md has no section for {command}"
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in text, f"docs/cli.md does not mention {command} {option}"
