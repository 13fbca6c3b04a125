"""The documentation can be trusted: every command in a ```bash block of README.md and docs/ is
run here, on made data, through the installed commands' entry points, and its output checked (or it is
listed in NOT_RUN with the reason it cannot run on a test machine); every relative link
resolves; the configuration reference is what the code generates; and nothing in the
repository points at a file outside it."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.helpers import REPO, call_main

ROOT = REPO
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Commands a test machine cannot run, each with why (and where its substance is tested).
NOT_RUN = {
    "make demo": "the main job: its two commands (vicreg pretrain, vicreg-sweep --study demo) run below",
    "make test": "the test suite itself",
    "make ui": "a server left running; tests/test_notebooks.py starts MLflow's server and reads it",
    "pip install": "installation: make install, which every CI run does, installs this way",
    "sudo -u postgres": "a database host's set-up; tests/test_postgres.py runs sweeps on a throwaway server",
    "mlflow server": "a tracking server; tests/test_notebooks.py starts one",
    "export ": "an environment variable for the server above",
    "sbatch ": "a SLURM cluster; tests/sweeps/test_run.py runs the script's command as a dry run",
    "kubectl ": "a Kubernetes cluster; tests/sweeps/test_run.py runs the Job's command as a dry run",
    "--gpus 0,1": "needs two GPUs; benchmarks/gpu_check.sh runs --gpus on a GPU machine",
    "@db-host": "needs the shared PostgreSQL and MLflow hosts of docs/machines.md; tests/test_postgres.py",
}

# What each command must print (the first pattern that matches the command applies).
EXPECT = [
    ("check-data --config", r"labelled images: \d+"),
    ("check-data", r"training images: \d+ \(grade 0"),
    ("make-synthetic", r"wrote synthetic DRAC22-format data"),
    ("vicreg pretrain", r"completed: reached train.epochs"),
    ("vicreg evaluate", r"pretraining vs random-init on the hold-out"),
    ("vicreg predict", r"wrote .*submission.csv"),
    ("--best", r"rank trial"),
    ("--dry-run", r"time per trial"),
    ("--predict", r"wrote "),
    ("vicreg-sweep", r"quote: hold-out"),
]

# Appended to a sweep that trains (argparse: the last value wins): one trial of one epoch at 16 px
# on the ResNet's ImageNet stem (tests/conftest.py's tiny_config says why), 3 folds (the studies'
# 5 cost two more fine-tuned heads per scoring, most of these sweeps' time), one confirm seed, in
# one process (a second worker would start torch for no trial: tests/sweeps/test_run.py and
# tests/test_postgres.py run several). The documented line runs whole; only its size shrinks.
SMALL_SWEEP = ["--trials", "1", "--seeds", "1", "--workers", "1", "--set", "train.epochs=1",
               "--set", "data.image_size=16", "--set", "eval.epochs=1", "--set", "data.batch_size=16",
               "--set", "data.folds=3",
               "--set", "model.init=random",
               "--set", "optim.name=adam", "--set", "optim.lr=0.001", "--set", "model.expander_hidden=64",
               "--set", "model.small_stem=false"]
SMALL_PRETRAIN = ["--set", "train.epochs=1", "--set", "model.small_stem=false", "--set", "data.image_size=16"]


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every line of every ```bash block, continuation lines joined."""
    out = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.split("  #")[0].strip()
                if line and not line.startswith("#"):
                    out.append((page.name, line))
    return out


def _why_not(command: str) -> str | None:
    return next((why for key, why in NOT_RUN.items() if key in command), None)


def _folder_set(root: Path) -> None:
    """Two classes of 18 RGB images each, and 4 test images: enough for 5 folds and a hold-out."""
    for c, shade in (("mild", 60), ("severe", 170)):
        (root / c).mkdir(parents=True)
        for i in range(18):
            Image.new("RGB", (40, 40), (shade, 30 + 9 * i, 90)).save(root / c / f"{c}{i}.png")
    (root / "test").mkdir()
    for i in range(4):
        Image.new("RGB", (40, 40), (100, 20 * i, 50)).save(root / "test" / f"t{i}.png")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, synthetic_root):
    """A folder to run the commands in, with the data they name: DIR and /data/aptos (a folder
    set), /data/DRAC22 (the synthetic DRAC22-format set), my-set.yaml (a copy of the folder
    template, with its test folder named)."""
    work = tmp_path_factory.mktemp("docs")
    # The commands run from a copy of the repository's study files, as from a clone's root: what they
    # write (experiments/best/, runs/, mlruns) lands here, never in the repository.
    shutil.copytree(ROOT / "experiments", work / "experiments", ignore=shutil.ignore_patterns("best"))
    _folder_set(work / "own")
    doc = yaml.safe_load((ROOT / "experiments" / "folder.yaml").read_text())
    doc["base"]["data"]["test"] = "test"
    (work / "my-set.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    subs = {"DIR": str(work / "own"), "/data/aptos": str(work / "own"), "/data/DRAC22": str(synthetic_root),
            "my-set.yaml": str(work / "my-set.yaml")}
    return work, subs


def _argv(command: str, subs: dict[str, str]) -> list[str]:
    """The command's words after its program name, placeholders replaced, size shrunk."""
    words = [subs.get(w, w) for w in shlex.split(command)]
    if "--study" in words:  # the same study, from the workspace's copy (its best file lands there)
        i = words.index("--study")
        words[i:i + 2] = ["--config", f"experiments/{words[i + 1]}.yaml"]
    if "vicreg-sweep" in command and not any(f in command for f in ("--best", "--dry-run", "--predict")):
        words += SMALL_SWEEP
    if "vicreg-sweep" in command and "--dry-run" in command:
        # In this process: 4 trials of milliseconds do not need 4 interpreters (2.5 s of CPU each
        # for MLflow); workers sharing a dry-run study are tests/test_load.py's.
        words += ["--trials", "4", "--workers", "1"]
    if command.startswith("vicreg pretrain"):
        words += SMALL_PRETRAIN
    if "make-synthetic" in command:
        words += ["--count", "12", "--size", "64"]
    return words[1:]


def _entry_point(program: str):
    """The function pyproject.toml's [project.scripts] installs as `program`: the test calls it in
    its own process (an interpreter, torch and MLflow start per command cost 5 s of CPU each;
    test_shutil_which_finds_the_commands_after_install runs the installed files themselves)."""
    import importlib

    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    target = re.search(rf'^{re.escape(program)} = "([\w.]+):(\w+)"', section, re.M)
    assert target, f"pyproject.toml installs no `{program}`"
    return getattr(importlib.import_module(target.group(1)), target.group(2))


def _reads_a_result(command: str) -> bool:
    return any(w in command for w in ("--best", "--predict", " evaluate ", " predict "))


def _group(command: str) -> str:
    """The commands that must run in one order in one folder: a study's sweep with what reads its
    results (--best, --predict), and `vicreg pretrain` with the evaluate and predict of its
    checkpoint. Groups are independent, so pytest-xdist can run them side by side."""
    words = shlex.split(command)
    if words[0] == "vicreg" and words[1] in ("pretrain", "evaluate", "predict"):
        return "vicreg pretrain"
    flag = next((f for f in ("--study", "--config") if f in words), None)
    if words[0] == "vicreg-sweep" and flag and "--dry-run" not in words:
        return f"vicreg-sweep {flag} {words[words.index(flag) + 1]}"
    return command


def _groups() -> dict[str, list[tuple[str, str]]]:
    """{group: [(page, command), ...]} of the commands a test machine runs, readers of a result last."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for page, command in documented_commands():
        if _why_not(command) is None:
            groups.setdefault(_group(command), []).append((page, command))
    return {g: sorted(cs, key=lambda pc: _reads_a_result(pc[1])) for g, cs in groups.items()}


def test_every_documented_command_is_run_or_says_why() -> None:
    assert len(documented_commands()) >= 15
    groups = _groups()
    run = [c for cs in groups.values() for c in cs]
    assert len(run) >= 10, run  # most documented commands run, not just pass through NOT_RUN
    for page, command in run:
        assert any(key in command for key, _ in EXPECT), \
            f"{page}: no expected output for `{command}`: add it to EXPECT or NOT_RUN"
        if _reads_a_result(command):  # what it reads is made in its own group
            assert any(not _reads_a_result(c) for _, c in groups[_group(command)]), command


@pytest.mark.slow  # a dozen commands end to end: make test, not make test-fast
@pytest.mark.parametrize("group", sorted(_groups()))
def test_documented_commands_run(workspace, group: str, monkeypatch, capfd) -> None:
    work, subs = workspace
    # As from a clone's root, with a home of its own (no ~/.cache/torch weights, no MLflow settings).
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen = set()
    for page, command in _groups()[group]:
        pattern = next(p for key, p in EXPECT if key in command)
        argv = _argv(command, subs)
        if tuple(argv) in seen:  # the same line on two pages, or two placeholders for one made folder
            continue
        seen.add(tuple(argv))
        out = call_main(_entry_point(shlex.split(command)[0]), capfd, *argv)
        text = out.stdout + out.stderr
        assert out.returncode == 0, f"{page}: `{command}` exited {out.returncode}:\n{text[-3000:]}"
        assert re.search(pattern, text), f"{page}: `{command}` did not print /{pattern}/:\n{text[-3000:]}"


def test_every_skipped_command_says_why_and_every_skip_is_used() -> None:
    commands = [c for _, c in documented_commands()]
    for key in NOT_RUN:
        assert any(key in c for c in commands), f"NOT_RUN[{key!r}] matches no documented command: remove it"


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://|mailto:|#", target):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_configuration_reference_is_current() -> None:
    from vicreg.config.reference import reference

    page = (ROOT / "docs" / "configuration.md").read_text()
    stale = "docs/configuration.md is stale: python -m vicreg.config.reference > docs/configuration.md"
    assert page == reference(), stale


def test_the_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines: move detail into docs/"
    first = "\n".join(lines[:60])
    for must in ("make demo", "pip install -e", "## The demo"):
        assert must in first, must


def test_nothing_points_outside_the_repository() -> None:
    """Users have this repository only: no file may cite one outside it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    bad = []
    for name in tracked:
        path = ROOT / name
        if name == "tests/test_docs.py" or path.suffix not in (".py", ".md", ".yaml", ".yml", ".sh", ".ipynb",
                                                                 ".toml", ".cfg", ".txt", ""):
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        for needle in ("REFERENCE.md", "REFERENCE 1", "../shared", "shared/REFERENCE"):
            if needle in text:
                bad.append(f"{name}: {needle}")
    assert not bad, bad


def test_docs_name_the_installed_commands() -> None:
    for page in PAGES:
        text = page.read_text()
        for old in ("python -m vicreg ", "python sweeps/run.py "):  # the commands run by path, not installed
            assert old not in text, f"{page.name}: {old}"


def test_shutil_which_finds_the_commands_after_install() -> None:
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "vicreg").is_file():
        pytest.skip("not installed with pip (make install installs the commands)")
    for name in ("vicreg", "vicreg-sweep"):
        assert shutil.which(name, path=str(bin_dir)), name
        out = subprocess.run([str(bin_dir / name), "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and f"usage: {name}" in out.stdout, out.stdout + out.stderr
