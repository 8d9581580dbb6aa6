"""The package's imports: no vidtx module imports, directly or through others, one that imports it.

Read from the source (no module is imported): every `import` / `from ... import` of a vidtx
module counts, also those inside functions, so a cycle cannot hide behind a lazy import.
"""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def vidtx_modules() -> dict[str, str]:
  """{dotted module name: file} of every module of the vidtx package (packages by their name)."""
  modules = {}
  for directory, _, files in os.walk(os.path.join(REPO, "vidtx")):
    for file in files:
      if file.endswith(".py"):
        path = os.path.join(directory, file)
        name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        modules[name.removesuffix(".__init__")] = path
  return modules


def imported(name: str, path: str, modules: dict[str, str]) -> set[str]:
  """The vidtx modules that module `name` (its source at `path`) imports anywhere in it."""
  package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names if alias.name in modules)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from the package, up level - 1
        parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{parent}.{base}" if base else parent
      for alias in node.names:  # `from vidtx import m` imports module m; else the module itself
        target = f"{base}.{alias.name}"
        out.add(target if target in modules else base)
  return (out & set(modules)) - {name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of the directed graph as [a, b, ..., a], or None (depth-first search)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_is_resolved_and_acyclic():
  modules = vidtx_modules()
  graph = {name: imported(name, path, modules) for name, path in modules.items()}
  # The graph is real: known edges, a lazy (in-function) import among them, are found.
  assert {"vidtx.models.family", "vidtx.errors"} <= graph["vidtx.models"]
  assert "vidtx.data.augment" in graph["vidtx.data.config"]  # imported inside check()
  assert "vidtx.models.explain" in graph["vidtx.models.tokshift"]
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)
