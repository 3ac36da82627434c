"""The package layout of docs/development.md, checked from the source (no import): one folder per
role, only the public API / registry / config reading / PaddleSeg fixes at the top, the arrows
layers <- models <- exporting, quantization <- cli, benchmarks, and a runtime that imports nothing
of ``paddle_rtseg`` and no Paddle at module level."""
import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "paddle_rtseg")
RUNTIME = os.path.join(ROOT, "runtime", "paddle_rtseg_runtime")
TOP_LEVEL = {"__init__.py", "registry.py", "config.py", "compat.py"}
ROLES = {"layers", "models", "datasets", "weights", "exporting", "quantization", "benchmarks", "cli"}
# what each role may import from paddle_rtseg (besides itself and the top-level modules)
ALLOWED = {
    "layers": set(),
    "datasets": set(),
    "weights": set(),
    "models": {"layers", "weights"},
    "exporting": {"layers", "models", "weights", "datasets"},
    "quantization": {"layers", "models", "weights", "datasets", "exporting"},
    "cli": {"layers", "models", "weights", "datasets", "exporting", "quantization", "benchmarks"},
    "benchmarks": {"layers", "models", "weights", "datasets", "exporting", "quantization", "cli"},
}


def _modules(folder):
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def _imports(path, package):
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    rel = os.path.relpath(path, os.path.dirname(package))[:-3].split(os.sep)
    here = rel[:-1]  # the package the module is in
    names = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + ["{}.{}".format(module, a.name) for a in node.names]
    return names


def _module_level_imports(path):
    tree = ast.parse(open(path).read())
    return [a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names] + \
        [node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)]


def test_only_the_public_api_lives_at_the_top():
    entries = set(os.listdir(PACKAGE)) - {"__pycache__"}
    files = {e for e in entries if os.path.isfile(os.path.join(PACKAGE, e))}
    folders = entries - files
    assert files == TOP_LEVEL
    assert folders == ROLES


def test_arrows_point_one_way():
    wrong = []
    for role in ROLES:
        for path in _modules(os.path.join(PACKAGE, role)):
            for name in _imports(path, PACKAGE):
                parts = name.split(".")
                if parts[0] != "paddle_rtseg" or len(parts) < 2 or parts[1] not in ROLES:
                    continue
                if parts[1] != role and parts[1] not in ALLOWED[role]:
                    wrong.append("{} imports {}".format(os.path.relpath(path, ROOT), name))
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_top_level_modules_import_no_front_end():
    for name in TOP_LEVEL - {"__init__.py"}:
        for imported in _imports(os.path.join(PACKAGE, name), PACKAGE):
            assert not imported.startswith(("paddle_rtseg.cli", "paddle_rtseg.benchmarks",
                                            "paddle_rtseg.exporting", "paddle_rtseg.quantization")), \
                (name, imported)


def test_runtime_needs_neither_paddle_rtseg_nor_paddle_at_import():
    for path in _modules(RUNTIME):
        for name in _imports(path, RUNTIME):
            assert name.split(".")[0] != "paddle_rtseg", (path, name)
        for name in _module_level_imports(path):
            assert name.split(".")[0] not in ("paddle", "paddleseg", "paddlelite", "onnxruntime",
                                              "onnx"), (path, name)


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[0] == "runtime":
        rel = rel[1:]
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def test_no_import_circles():
    """Module-level imports between our modules form no cycle (imports of a module's own parent
    packages excluded: Python initialises those first by definition)."""
    paths = list(_modules(PACKAGE)) + list(_modules(RUNTIME))
    known = {_module_name(p): p for p in paths}
    graph = {}
    for name, path in known.items():
        tree = ast.parse(open(path).read())
        edges = set()
        is_package = path.endswith("__init__.py")
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in tree.body:
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = ["{}.{}".format(module, a.name) for a in node.names] + [module]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                # a module's own packages are initialised before it (not a circle)
                if target and target != name and not name.startswith(target + "."):
                    edges.add(target)
        graph[name] = edges
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
