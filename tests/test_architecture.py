"""The shape of the package: imports point one way (no cycles) and functions stay short."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fcn_tf"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts).removesuffix(".__init__")] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> fcn_tf modules it imports, anywhere in it (functions included)."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("fcn_tf")
            ):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.append(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("fcn_tf")]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph) -> list[str] | None:
    state = {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target, [*path, target])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycle_among_fcn_tf_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_models_and_data_never_import_training_or_tools():
    graph = import_graph()
    upper = {"fcn_tf.engine", "fcn_tf.tutorial", "fcn_tf.train", "fcn_tf.evaluate",
             "fcn_tf.predict", "fcn_tf.export", "fcn_tf.inference", "fcn_tf.benchmark",
             "fcn_tf.boxes"}  # fmt: skip
    for name, targets in graph.items():
        if name.startswith(("fcn_tf.models", "fcn_tf.data", "fcn_tf.task", "fcn_tf.config")):
            reached = {t for t in targets if any(t.startswith(u) for u in upper)}
            assert not reached, f"{name} imports {reached}"


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.name} ({lines})")
    assert not long, long


def test_tutorial_holds_the_exercise_stages_only():
    tree = ast.parse((PACKAGE / "tutorial.py").read_text())
    functions = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert functions == ["load_vgg", "layers", "optimize", "train_nn", "run"]


def test_the_commands_answer_help_without_importing_tensorflow():
    """`--help` of each command is instant: TensorFlow (about 4 s) loads only for the work
    (`evaluate --help` took 5.4 s while its scoring imports sat at the top of the module)."""
    import subprocess
    import sys

    commands = ("train", "evaluate", "predict", "export", "benchmark", "boxes")
    script = (
        "import sys\n"
        f"for name in {commands!r}:\n"
        "    module = __import__(f'fcn_tf.{name}', fromlist=['main'])\n"
        "    try:\n"
        "        module.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip().splitlines()[-1] == "[]"
