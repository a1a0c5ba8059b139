"""Every command in README.md's code blocks, exercised so that the guide cannot drift
from the code: ``make`` targets exist (listed by ``make help``, dry-run by ``make -n``),
``chordrec`` command lines parse with chordrec's own argument parser, and the Hydra
overrides of ``python -m chordrec.train`` (and of ``chordrec train`` and ``chordrec
evaluate``) compose, each value of a sweep in turn. Nothing trains. A line that must not
run here (an install, a system package) is in :data:`NOT_RUN`, with the reason."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

PLACEHOLDER = "0123456789abcdef0123456789abcdef"
"""What ``<run id>``, ``<id>`` and the like stand for: a well-formed run or study id."""

NOT_RUN = {
    ("pip", "install"): "installs packages; its extras are checked against pyproject.toml",
    ("sudo", "apt-get"): "installs Debian packages",
}
"""Commands the test does not run, by their first two words, and why."""

BLOCK = re.compile(r"^```(bash|sh)?\n(.*?)^```", re.M | re.S)


def readme_commands() -> list[list[str]]:
    """Each command of README.md's bash/sh/plain code blocks, as words: continuation
    lines joined, comments dropped, placeholders (``<run id>``) and ``$PWD`` filled."""
    commands = []
    for _, body in BLOCK.findall(README.read_text()):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"<[^<>\n]+>", PLACEHOLDER, line).replace("$PWD", "/tmp")
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


COMMANDS = readme_commands()


def _kind(words: list[str]) -> str:
    if words[0] == "make":
        return "make"
    if words[0] in ("python", "python3") and words[1:3] == ["-m", "chordrec.train"]:
        return "train"
    if words[0] == "chordrec":
        return "chordrec"
    if tuple(words[:2]) in NOT_RUN:
        return "not run"
    return "unknown"


def _ids(kind: str) -> list[str]:
    return [shlex.join(w) for w in COMMANDS if _kind(w) == kind]


def test_the_readme_has_commands_of_every_kind() -> None:
    kinds = {_kind(words) for words in COMMANDS}
    assert {"make", "train", "chordrec"} <= kinds, kinds


def test_every_readme_command_is_one_this_test_knows() -> None:
    """A new kind of command in the README needs a check here (or a line in NOT_RUN)."""
    unknown = [" ".join(words) for words in COMMANDS if _kind(words) == "unknown"]
    assert not unknown, f"README commands this test does not exercise: {unknown}"


# ------------------------------------------------------------------------ make


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def make_help() -> str:
    if shutil.which("make") is None:
        pytest.skip("needs make")
    listed = _make("help")
    assert listed.returncode == 0, listed.stderr
    return listed.stdout


def test_make_help_lists_every_target(make_help: str) -> None:
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.M)
    assert phony, "no .PHONY line in the Makefile"
    for target in phony.group(1).split():
        assert re.search(rf"^\s+make {re.escape(target)}\s", make_help, re.M), target


@pytest.mark.parametrize("line", _ids("make"))
def test_readme_make_command(line: str, make_help: str) -> None:
    words = shlex.split(line)
    targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
    assert targets, line
    for target in targets:
        assert re.search(rf"^\s+make {re.escape(target)}\s", make_help, re.M), target
    dry = _make("-n", *words[1:])  # -n: print what would run, run nothing
    assert dry.returncode == 0, dry.stderr


# ------------------------------------------------------------------------ chordrec


def _hydra_overrides(arguments: list[str]) -> list[list[str]]:
    """The override lists that check ``arguments`` of a (multi)run: without ``-m``, one
    per value of each swept key (``seed=0,1,2``: 0, 1 and 2), the other keys at their
    first value. Values in brackets or Hydra's sweep functions are taken as they are."""
    plain = [a for a in arguments if a not in ("-m", "--multirun")]
    assert all(not a.startswith("-") for a in plain), f"options among overrides: {plain}"
    first = []
    sweeps = []
    for i, override in enumerate(plain):
        key, _, value = override.partition("=")
        if "," in value and not re.search(r"[\[\]({]", value):
            values = value.split(",")
            sweeps += [(i, f"{key}={v}") for v in values[1:]]
            first.append(f"{key}={values[0]}")
        else:
            first.append(override)
    lists = [first]
    for i, override in sweeps:
        lists.append([*first[:i], override, *first[i + 1 :]])
    return lists


def _compose(overrides: list[str]) -> None:
    from chordrec.train import compose_config

    compose_config(overrides)


@pytest.mark.parametrize("line", _ids("train"))
def test_readme_training_command(line: str) -> None:
    arguments = shlex.split(line)[3:]
    if arguments == ["--help"]:
        return  # test_readme_training_help runs it
    for overrides in _hydra_overrides(arguments):
        _compose(overrides)  # raises on a group, option or key that does not exist


@pytest.mark.slow
def test_readme_training_help() -> None:
    """``python -m chordrec.train --help``, as the README shows it."""
    assert ["python", "-m", "chordrec.train", "--help"] in COMMANDS
    result = subprocess.run(
        [sys.executable, "-m", "chordrec.train", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "model:" in result.stdout or "model" in result.stdout


@pytest.mark.parametrize("line", _ids("chordrec"))
def test_readme_chordrec_command(line: str) -> None:
    from chordrec.cli import build_parser

    words = shlex.split(line)[1:]
    parser = build_parser()
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # argparse: an unknown command or option
        pytest.fail(f"`{line}` does not parse (exit {exc.code})")
    if args.command == "train":
        for overrides in _hydra_overrides(list(args.arguments)):
            _compose(overrides)
    elif args.command == "evaluate":
        run_id, *overrides = args.arguments
        assert run_id == PLACEHOLDER, line
        _compose(overrides)  # the changes apply to a run's config: they must compose


# ------------------------------------------------------------------------ not run


def test_readme_lines_not_run_are_few() -> None:
    not_run = [w for w in COMMANDS if _kind(w) == "not run"]
    assert len(not_run) <= 6, not_run


def test_readme_pip_extras_exist() -> None:
    """Every extra a README ``pip install`` names (``".[server,tune]"``) is declared."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = set(project.get("optional-dependencies", {}))
    named = set()
    for words in COMMANDS:
        if words[:2] == ["pip", "install"]:
            for spec in words[2:]:
                match = re.search(r"\[([\w,-]+)\]", spec)
                if match:
                    named |= set(match.group(1).split(","))
    named |= set(re.findall(r"^\| `\[([\w-]+)\]` \|", README.read_text(), re.M))  # the table
    assert named, "no pip install line names an extra"
    assert named <= declared, named - declared
