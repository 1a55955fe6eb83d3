"""The shape of the code: arrows one way, no cycles, no imports hidden in
functions to dodge one. `make lint` runs the import-linter contracts in
pyproject.toml; these tests prove the contracts can fail and check what they
do not cover."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("config", "dashboard", "providers")


def test_no_import_cycle_between_modules() -> None:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module, as_packages=False):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                cycles.append(f"{module} -> {' -> '.join(chain or [])}")
    assert not cycles, "Import cycles:\n" + "\n".join(cycles)


def _function_level_imports(path: Path) -> list[str]:
    """Imports of the project's own modules inside a function, unless a
    comment on the line says why (AppConfig.ready registering checks)."""
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom):
                name = "." * inner.level + (inner.module or "")
            elif isinstance(inner, ast.Import):
                name = inner.names[0].name
            else:
                continue
            explained = "#" in lines[inner.lineno - 1]
            relative = getattr(inner, "level", 0)  # `import x` has no level
            if (relative or name.split(".")[0] in PACKAGES) and not explained:
                found.append(f"{path.relative_to(ROOT)}:{inner.lineno} {name}")
    return found


def test_no_function_level_import_of_a_project_module() -> None:
    sources = [
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    ]
    hidden = [line for path in sources for line in _function_level_imports(path)]
    assert not hidden, "Function-level imports (a cycle dodged?):\n" + "\n".join(hidden)


@pytest.mark.parametrize(
    ("module", "imports", "contract"),
    [
        ("dashboard/core/backarrow.py", "from dashboard.jobs import services", "layers"),
        ("dashboard/jobs/backarrow.py", "from dashboard.web import views", "layers"),
        ("dashboard/instances/backarrow.py", "from dashboard.jobs import worker", "layers"),
        ("dashboard/accounts/backarrow.py", "from dashboard.jobs import services", "layers"),
        ("dashboard/jobs/backarrow.py", "from dashboard.notify import webhooks", "layers"),
        ("dashboard/instances/backarrow.py", "from dashboard.notify import receivers", "notify"),
        ("providers/backarrow.py", "import django.db", "providers"),
    ],
)
def test_lint_fails_on_a_back_arrow(
    tmp_path: Path, module: str, imports: str, contract: str
) -> None:
    """The contracts are not vacuous: one added back-arrow breaks `make lint`."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    lint = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"]
    clean = subprocess.run(lint, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    (tmp_path / module).write_text(f"{imports}\n")
    broken = subprocess.run(lint, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and module.replace("/", ".")[:-3] in broken.stdout
