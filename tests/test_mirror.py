"""The tests mirror the packages: tests/vicreg/test_<name>.py tests vicreg/<name>.py or the
package vicreg/<name>/ (test_<package>_<module>.py: one module of a package), and likewise
tests/sweeps/ for sweeps/. A test file with no module counterpart fails here, and so does a
module with no test file of its name unless the table below says which test file covers it.
Whole-product tests (every command line, the documents, servers, load) sit in tests/ itself."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import REPO

# Tests of the product as a whole, each named with what it runs across.
WHOLE_PRODUCT = {
    "test_bad_inputs.py": "every bad input through both command lines",
    "test_docs.py": "every command the README and docs/ show",
    "test_learning.py": "pretraining then probing on real images",
    "test_load.py": "eight workers, many trials, two storages",
    "test_notebooks.py": "the notebooks against a sweep's MLflow server",
    "test_postgres.py": "sweeps on a throwaway PostgreSQL server",
    "test_null.py": "a sweep and its confirm stage on permuted labels",
    "test_mirror.py": "this file",
}

# Modules whose behaviour is tested through another module's test file: module -> that file.
TESTED_IN = {
    "vicreg/__main__.py": "tests/vicreg/test_evaluate.py",  # the CLI's evaluate/predict in-process
    "vicreg/coverage.py": "tests/vicreg/test_verdict.py",
    "vicreg/errors.py": "tests/test_bad_inputs.py",
    "vicreg/imagenet.py": "tests/vicreg/test_model.py",
    "vicreg/io.py": "tests/vicreg/test_data.py",  # the cache's lock and atomic writes
    "vicreg/plots.py": "tests/sweeps/test_run.py",  # a logged run's figures
    "sweeps/analysis.py": "tests/test_notebooks.py",
    "sweeps/best.py": "tests/sweeps/test_outcome.py",
    "sweeps/cli.py": "tests/sweeps/test_run.py",
    "sweeps/context.py": "tests/sweeps/test_run.py",
    "sweeps/launch.py": "tests/sweeps/test_gpu_share.py",
    "sweeps/objective.py": "tests/sweeps/test_run.py",
    "sweeps/pyfunc_encoder.py": "tests/test_notebooks.py",  # the registered model served back
    "sweeps/reports.py": "tests/sweeps/test_confirm.py",
    "sweeps/signals.py": "tests/sweeps/test_run.py",  # Ctrl-C, SIGTERM, --max-time
    "sweeps/space.py": "tests/sweeps/test_study.py",
    "sweeps/tracking": "tests/sweeps/test_run.py",  # every MLflow call, through the runs it makes
}


def _modules(package: str) -> list[str]:
    """'vicreg/train.py', 'vicreg/data' (a subpackage counts once), ... of a top-level package."""
    root = REPO / package
    found = [f"{package}/{p.name}" for p in root.glob("*.py") if p.name != "__init__.py"]
    found += [f"{package}/{p.name}" for p in root.iterdir() if (p / "__init__.py").is_file()]
    return sorted(found)


def _counterpart(package: str, test: Path) -> str | None:
    """The module or package a tests/<package>/test_<name>.py mirrors, or None."""
    name = test.stem.removeprefix("test_")
    root = REPO / package
    if (root / f"{name}.py").is_file():
        return f"{package}/{name}.py"
    if (root / name / "__init__.py").is_file():
        return f"{package}/{name}"
    sub, _, module = name.partition("_")
    if module and (root / sub / f"{module}.py").is_file():
        return f"{package}/{sub}"
    return None


def test_every_test_file_mirrors_a_module_and_every_module_has_its_tests() -> None:
    mirrored: set[str] = set()
    orphans = []
    for package in ("vicreg", "sweeps"):
        for test in sorted((REPO / "tests" / package).glob("test_*.py")):
            found = _counterpart(package, test)
            if found is None:
                orphans.append(str(test.relative_to(REPO)))
            else:
                mirrored.add(found)
    top = {p.name for p in (REPO / "tests").glob("test_*.py")}
    orphans += [f"tests/{name}" for name in sorted(top - set(WHOLE_PRODUCT))]
    assert not orphans, f"test files that mirror no module (rename, or list a whole-product test): {orphans}"
    untested = [m for p in ("vicreg", "sweeps") for m in _modules(p) if m not in mirrored and m not in TESTED_IN]
    assert not untested, f"modules with no test file of their name and none named in TESTED_IN: {untested}"
    stale = [m for m in TESTED_IN if not (REPO / m).exists() or not (REPO / TESTED_IN[m]).is_file()]
    assert not stale, f"TESTED_IN names what does not exist: {stale}"
    assert sorted(set(WHOLE_PRODUCT) - top) == [], "WHOLE_PRODUCT lists a file that is gone"
