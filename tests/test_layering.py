"""Apps import only the layers below them (docs/architecture.md, "What may import
what?"): a lower app asks a higher one through a registry the higher one fills when
Django starts, never by importing it, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each app and the apps it may import (besides itself).
ALLOWED = {
    "core": set(),
    "inventory": {"core", "config"},  # config: the environment parsers (config.env)
    "models_app": {"core", "inventory"},
    "scheduling": {"core", "inventory", "models_app"},
    "gateway": {"core", "inventory", "models_app", "scheduling"},
    "agent": {"core", "inventory", "models_app", "scheduling"},
}
PROJECT = set(ALLOWED) | {"config", "devtools", "tests", "bench"}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("app", sorted(ALLOWED))
def test_apps_import_only_the_layers_below_them(app):
    wrong = {
        f"{path.relative_to(ROOT)} imports {package}"
        for path in (ROOT / app).rglob("*.py")
        for package in imported_packages(path) - ALLOWED[app] - {app}
    }
    assert not wrong, sorted(wrong)


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from scheduling.models import Instance\n")
    assert imported_packages(module) == {"scheduling"}


# models_app's plain-Python cores (no Django) and what each may import from the project:
# the download engine builds on GGUF header reading, never the other way round.
PLAIN_CORES = {
    "models_app/gguf": {"core.units", "models_app.fetch_guard", "models_app.retrying"},
    "models_app/transfer": {"models_app.gguf", "models_app.fetch_guard", "models_app.retrying"},
    "models_app/estimator": {"core.units", "models_app.gguf"},
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _allowed(module: str, own: str, allowed: set[str]) -> bool:
    if module.split(".")[0] not in PROJECT | {"django"}:
        return True  # the standard library and third-party packages
    return any(module == ok or module.startswith(f"{ok}.") for ok in allowed | {own})


@pytest.mark.parametrize("package", sorted(PLAIN_CORES))
def test_plain_cores_import_no_django_and_only_the_cores_below_them(package):
    own = package.replace("/", ".")
    wrong = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / package).rglob("*.py")
        for module in imported_modules(path)
        if not _allowed(module, own, PLAIN_CORES[package])
    }
    assert not wrong, sorted(wrong)
