"""No file of the repository names an absolute path of a machine or a file outside the
repository, and the algorithm document that code comments cite is in it (docs/algorithm.md).

Scanned: every file git tracks, plus untracked files git does not ignore (so a new file is checked
before it is committed); binary files (a NUL byte or not UTF-8) and files over ``MAX_BYTES`` are
skipped. Flagged, with file and line:

- an absolute path under one of ``MACHINE_ROOTS`` (the home, temporary, mount and work folders
  of a machine) or after a Windows drive letter. A URL (``https://...``), a ``sqlite:`` URI or a
  path after a word character (``evaluation/thin/...``) is not an absolute path of a machine;
  tests that need a real directory use pytest's ``tmp_path``;
- a reference to a file outside the repository: the ``shared`` folder beside the checkout (its
  datasets or its specification) and the old "spec" section citations of that specification
  (code cites ``docs/algorithm.md §N`` instead).

The offending examples of the self-checks are assembled at run time, so this file passes its own
scan.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ALGORITHM_DOC = REPO_ROOT / "docs" / "algorithm.md"
MAX_BYTES = 2_000_000

#: Top-level directories whose paths belong to one machine (or one user on it).
MACHINE_ROOTS = (
    "home",
    "root",
    "Users",
    "tmp",
    "var",
    "private",
    "work",
    "mnt",
    "media",
    "scratch",
    "srv",
    "opt",
    "nfs",
    "shared",
)
#: ``/<root>`` not preceded by a character that would make it part of a longer token: a word
#: character (``evaluation/thin``), ``.``/``~``/``-`` (relative or home paths), ``/`` or ``:``
#: (URLs and URIs), or a placeholder's closing character (``<tmp>/``, ``${VAR}/``).
UNIX_ABSOLUTE = re.compile(r"(?<![\w.~\-/:>})\]$])/(?:" + "|".join(MACHINE_ROOTS) + r")(?![\w.\-])")
#: A drive letter, a colon and one separator (a JSON-escaped backslash counts as one), as a token
#: of its own: in ``https://`` a word character precedes ``s:`` and two slashes follow it.
WINDOWS_ABSOLUTE = re.compile(r"(?<![\w/\\])[A-Za-z]:(?:\\{1,2}|/)(?![/\\])")
OUTSIDE_REPOSITORY = re.compile(r"\.\./shared\b|\bshared/spec\b|\bspec\s*(?:``[^`]*``\s*)?§")
#: A citation of the algorithm document by section (``docs/algorithm.md §2``, ``§1.1``).
CITATION = re.compile(r"algorithm\.md`{0,2}\s*§(\d+(?:\.\d+)?)")
#: Section headings of the algorithm document (``## §2 FtTPO``, ``### §1.1 Thin: ...``).
HEADING = re.compile(r"^#{2,3} §(\d+(?:\.\d+)?) ", re.MULTILINE)


def offending_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line naming a machine path or a file outside the repo."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if any(p.search(line) for p in (UNIX_ABSOLUTE, WINDOWS_ABSOLUTE, OUTSIDE_REPOSITORY)):
            found.append((number, line.strip()))
    return found


def repository_text_files() -> dict[str, str]:
    """``{path relative to the root: text}`` of the repository's text files (see module doc)."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: the repository's file list comes from git")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    files = {}
    for name in sorted(set(filter(None, listed.split("\0")))):
        path = REPO_ROOT / name
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            files[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files


def _join(*parts: str) -> str:
    return "".join(parts)


@pytest.mark.parametrize(
    "line",
    [
        _join("cache = '/", "home/alice/fttpo/cache'"),
        _join("See ``/", "work/shared/", "spec/fttpo.md`` section 1."),
        _join("root: /", "tmp/fttpo_bench_minari"),
        _join("`/", "Users/bob/data`"),
        _join("C:", "\\Users\\bob\\x.yaml"),
        _join('"C:', '\\\\Users\\\\bob"'),
        _join("D:", "/data/x.parquet"),
        _join("../", "shared/datasets"),
        _join("the spec at shared/", "spec/fttpo.md"),
        _join("(spec ", "§4)"),
    ],
)
def test_scanner_flags_machine_paths_and_files_outside_the_repository(line: str) -> None:
    text = "first line\n" + line + "\nlast line\n"
    assert offending_lines(text) == [(2, line.strip())]


@pytest.mark.parametrize(
    "line",
    [
        "https://docs.ray.io/en/latest/ray-security/token-auth.html",
        "sqlite:////no/such/dir/mlflow.db",
        "evaluation/thin/violation_rate and learners/default_policy/grad_steps",
        "MINARI_DATASETS_PATH=<tmp>/fttpo_bench_minari and ~/.minari/datasets",
        "--storage SHARED_DIR/ray_results (docs/algorithm.md §7)",
        "profile: .venv/lib/python3.11/site-packages/torch/optim/adam.py:347",
        "path = tmp_path / 'checkpoint'",
        r'LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \S")',
    ],
)
def test_scanner_leaves_urls_relative_paths_and_citations_alone(line: str) -> None:
    assert offending_lines(line) == []


def test_no_file_names_a_machine_path_or_a_file_outside_the_repository() -> None:
    files = repository_text_files()
    assert "fttpo_ray/__init__.py" in files and "README.md" in files
    offences = [
        f"{name}:{number}: {line}"
        for name, text in files.items()
        for number, line in offending_lines(text)
    ]
    assert not offences, "absolute or outside paths:\n" + "\n".join(offences)


def test_algorithm_document_exists_and_the_readme_links_it() -> None:
    assert ALGORITHM_DOC.is_file()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/algorithm.md)" in readme


def test_every_cited_section_of_the_algorithm_document_exists() -> None:
    sections = set(HEADING.findall(ALGORITHM_DOC.read_text(encoding="utf-8")))
    assert {"1", "1.1", "1.2", "1.3", "2", "3", "4", "5", "6", "7"} <= sections
    missing = [
        f"{name}: §{section}"
        for name, text in repository_text_files().items()
        for section in CITATION.findall(text)
        if section not in sections
    ]
    assert not missing, "citations of sections docs/algorithm.md does not have:\n" + "\n".join(
        missing
    )
