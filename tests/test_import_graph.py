"""The direction of imports (DESIGN.md): descriptors and matching never import pipeline or jobs, nor Ray;
pipeline never imports jobs. Read from the source with `ast`, so a lazy import inside a function counts."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("descriptors", "matching", "pipeline", "jobs")
FORBIDDEN = {
    "descriptors": ("copyscope.pipeline", "copyscope.jobs", "ray"),
    "matching": ("copyscope.pipeline", "copyscope.jobs", "ray"),
    "pipeline": ("copyscope.jobs",),
}


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts = ["copyscope", package, *path.relative_to(ROOT / package).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..pipeline import y
                base = parts[: len(parts) - node.level + (path.name == "__init__.py")]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def violations(package: str) -> list[str]:
    bad = []
    for path in modules(package):
        for line, module in imported_modules(path, package):
            for prefix in FORBIDDEN.get(package, ()):
                if module == prefix or module.startswith(prefix + "."):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return sorted(set(bad))


def test_every_package_has_modules():
    assert all(modules(p) for p in PACKAGES)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down_the_layers(package):
    assert violations(package) == []


def test_the_checker_sees_what_it_should(tmp_path, monkeypatch):
    """The rule itself can fail: lazy, relative and `import ray.data` imports are all caught."""
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    (tmp_path / "matching" / "sub").mkdir(parents=True)
    (tmp_path / "matching" / "sub" / "m.py").write_text(
        "import numpy\nfrom copyscope.descriptors.errors import UserError\n"
        "def f():\n    import ray.data\n    from ...pipeline import engine\n    from copyscope import jobs\n")
    assert {v.split(" imports ")[1] for v in violations("matching")} == {
        "copyscope.jobs", "ray.data", "copyscope.pipeline", "copyscope.pipeline.engine"}
