"""The layout rules, enforced: storage keys are spelled only in pipeline/keys.py, not in assets/."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_FOLDERS = ("raw", "frames", "buffer", "annotations", "datasets", "models", "reports", "retraining", "registry",
               "shadow")
KEY_LITERAL = re.compile(rf"^({'|'.join(TOP_FOLDERS)})/")
STORED_FILE = re.compile(r"^[^\s]*/[^/\s]+\.(parquet|json|csv|zip|pt|onnx|engine|yaml|cache|jpg|mp4)$")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def key_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant (f-string parts included) spelling a storage key."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if KEY_LITERAL.match(text) or STORED_FILE.search(text):
                hits.append((node.lineno, text))
    return hits


def test_the_rule_catches_key_literals():
    assert key_literals('x = "models/selected_model.json"') == [(1, "models/selected_model.json")]
    assert key_literals('x = f"frames/hard/{m}/manifest.parquet"') == [(1, "frames/hard/"), (1, "/manifest.parquet")]
    assert key_literals('x = f"{p}/hard_example_labels.parquet"') == [(1, "/hard_example_labels.parquet")]
    assert key_literals('def f():\n    """Reads models/selected_model.json."""\n') == []
    assert key_literals('x = "upload clips as buffer/<camera>/<day>/<clip>.mp4 files"') == []


def test_assets_spell_no_storage_key():
    found = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for path in sorted((ROOT / "assets").rglob("*.py"))
             for line, text in key_literals(path.read_text())]
    assert not found, "storage keys belong in pipeline/keys.py:\n" + "\n".join(found)


# --------------------------------------------------------------------------- import rules between the layers

LAYERS = {
    # folder: top-level packages it must not import
    "pipeline": ("dagster", "dagster_aws", "dagster_k8s", "dagster_pipes", "assets", "resources", "orchestration",
                 "demo"),
    "resources": ("assets", "orchestration", "demo"),
    "assets": ("demo",),
}
ALLOWED = {"assets": ("orchestration.partitions",)}  # assets name their partitions; nothing else of the wiring


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, those inside functions included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def layer_violations(folder: str) -> list[str]:
    banned = LAYERS[folder] + (("orchestration",) if folder == "assets" else ())
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in imported_modules(path.read_text()):
            top = module.split(".")[0]
            if top in banned and not any(module == a or module.startswith(a + ".") for a in ALLOWED.get(folder, ())):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return bad


def test_the_import_rule_sees_imports_inside_functions():
    assert imported_modules("def f():\n    import dagster as dg\n    from assets.labels import x\n") == [
        (2, "dagster"), (3, "assets.labels")]


def test_core_imports_no_dagster_assets_or_resources():
    assert not layer_violations("pipeline"), "pipeline/ is the plain-Python core:\n" + "\n".join(
        layer_violations("pipeline"))


def test_resources_and_assets_do_not_import_the_wiring():
    bad = layer_violations("resources") + layer_violations("assets")
    assert not bad, "only orchestration/ imports the layers above it:\n" + "\n".join(bad)


# --------------------------------------------------------------------------- no private helpers across asset modules


def private_imports(source: str, own_module: str) -> list[tuple[int, str]]:
    """(line, "module.name") of every `_`-prefixed name a file takes from another asset module, by
    `from assets.x import _name` (inside functions too) or by `assets.x._name`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                node.module.split(".")[0] == "assets" and node.module != own_module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = ast.unparse(node.value)
            if owner.startswith("assets.") and owner != own_module:
                found.append((node.lineno, f"{owner}.{node.attr}"))
    return found


def test_the_private_import_rule_sees_both_spellings():
    source = ("from assets.models import _materialize_dataset, detect\n"
              "def f():\n    from assets.retraining import _month_candidate\n"
              "    import assets.export\n    return assets.export._selected_weights\n")
    assert private_imports(source, "assets.experiments") == [
        (1, "assets.models._materialize_dataset"), (3, "assets.retraining._month_candidate"),
        (5, "assets.export._selected_weights")]
    assert private_imports("from assets.models import _x\n", "assets.models") == []
    assert private_imports("from assets.store_io import read_split\n", "assets.models") == []


def test_asset_modules_take_no_private_helper_from_each_other():
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {name}" for path in sorted((ROOT / "assets").rglob("*.py"))
           for line, name in private_imports(path.read_text(), ".".join(path.relative_to(ROOT).with_suffix("").parts))]
    assert not bad, ("a helper two asset modules share is public, in the core (pipeline/) or in assets/store_io.py "
                     "(store readers):\n" + "\n".join(bad))
