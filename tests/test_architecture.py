"""The import graph has no upward arrow: the shared library never imports a method package, and
data modules import neither models nor trainers. Checked on the source (every import statement,
also those inside functions), so a lazy import cannot hide an arrow."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def imports(path: pathlib.Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def modules(package: str):
    return sorted((REPO / package).rglob("*.py"))


def test_the_shared_library_never_imports_a_method_package():
    offenders = {str(p.relative_to(REPO)): sorted(m for m in imports(p) if m.split(".")[0] in ("stmg_jax", "vared_jax"))
                 for p in modules("everest_jax")}
    assert not {k: v for k, v in offenders.items() if v}


def test_method_packages_do_not_import_each_other():
    """STMG and VA-RED² build on the shared library only."""
    offenders = {str(p.relative_to(REPO)): sorted(m for m in imports(p) if m.split(".")[0] == other)
                 for package, other in (("stmg_jax", "vared_jax"), ("vared_jax", "stmg_jax"))
                 for p in modules(package)}
    assert not {k: v for k, v in offenders.items() if v}
    assert "everest_jax.trainer" in imports(REPO / "vared_jax" / "train.py")  # the checker sees them


def test_data_modules_import_no_model_or_trainer():
    allowed = ("everest_jax.data", "everest_jax.errors", "stmg_jax.data")  # nothing else of ours
    data_modules = [*modules("everest_jax/data"), REPO / "stmg_jax" / "data.py"]
    bad = {}
    for path in data_modules:
        ours = [m for m in imports(path) if m.split(".")[0] in ("everest_jax", "stmg_jax")]
        wrong = [m for m in ours if m not in ("everest_jax", "stmg_jax")
                 and not m.startswith(allowed)]
        if wrong:
            bad[str(path.relative_to(REPO))] = wrong
    assert not bad


def test_the_checker_sees_imports_inside_functions():
    """The test above would pass vacuously if `imports` missed imports inside functions."""
    src = REPO / "everest_jax" / "visualize.py"
    assert "everest_jax.data" in imports(src) and "importlib.metadata" in imports(src)
    assert "stmg_jax.checkpoint" in imports(REPO / "stmg_jax" / "overlay.py")  # imported inside load()
