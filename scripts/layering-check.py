#!/usr/bin/env python3
"""Checks that the library's modules depend on each other one way, in the order ARCHITECTURE.md
states.

The order is the first fenced block under ARCHITECTURE.md's "## Dependency order": one line per
layer, the modules of a layer separated by commas, the lowest layer first. A module may use
(`crate::name`, `crate::{name, ..}`) only modules of the layers above its own line, never one of
its own layer or a lower line. Every file counts, tests included: `src/NAME.rs` and everything
under `src/NAME/` belong to module NAME. Comments are ignored; the crate root (`src/lib.rs`) and
the binaries (`src/bin/`) are not modules of the order. Every module must be listed, so a new
one is placed on purpose.

Inside a module, its submodules must not import each other in a circle either: for each module
with submodules (`src/NAME/CHILD.rs` or `src/NAME/CHILD/`), the submodules' uses of one another
(`super::CHILD` from a child's own file, `super::super::CHILD` from a grandchild's,
`crate::NAME::CHILD` from anywhere inside) must form no cycle, at every depth. The module's own
file (`src/NAME.rs`), which declares and wires its children, is left out, as the crate root is.

Prints each violation and exits 1, or prints the order and exits 0. Needs only python3.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def stated_layers():
    """The layers as ARCHITECTURE.md writes them, lowest first."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Dependency order", 1)
    if len(section) != 2:
        sys.exit("layering-check: ARCHITECTURE.md has no '## Dependency order' section")
    block = re.search(r"```[a-z]*\n(.*?)```", section[1], re.S)
    if not block:
        sys.exit("layering-check: no fenced block under '## Dependency order'")
    layers = []
    for line in block.group(1).splitlines():
        names = [n.strip(" →") for n in line.strip().lstrip("→").split(",")]
        names = [n for n in names if n]
        if names:
            layers.append(names)
    return layers


def module_of(path):
    rel = path.relative_to(SRC)
    if rel.parts[0] == "bin" or rel == pathlib.Path("lib.rs"):
        return None
    return rel.parts[0].removesuffix(".rs")


def uses(path, modules):
    """The modules `path` names through `crate::`, comments left out."""
    code = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    code = "\n".join(re.sub(r"//.*", "", line) for line in code.splitlines())
    found = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", code))
    for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
        found.update(re.findall(r"\b([a-z_][a-z0-9_]*)\b", group))
    return found & modules


def strip_comments(text):
    code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*", "", line) for line in code.splitlines())


def child_of(path, parent):
    """The child of directory `parent` that `path` belongs to, or None for `parent`'s own file."""
    rel = path.relative_to(parent)
    return rel.parts[0].removesuffix(".rs")


def submodule_cycles():
    """Cycles among the sibling submodules of every module directory under src/."""
    problems = []
    for parent in sorted(p for p in SRC.rglob("*") if p.is_dir() and p.name != "bin"):
        children = {c.stem for c in parent.iterdir() if c.suffix == ".rs"}
        children |= {c.name for c in parent.iterdir() if c.is_dir()}
        if len(children) < 2:
            continue
        module_path = "::".join(parent.relative_to(SRC).parts)
        edges = {c: set() for c in children}
        for path in parent.rglob("*.rs"):
            child = child_of(path, parent)
            if child not in children:
                continue
            depth = len(path.relative_to(parent).parts)  # 1: the child's own file
            code = strip_comments(path.read_text())
            ups = "super::" * depth
            used = set(re.findall(r"(?<!::)\b" + re.escape(ups) + r"([a-z_][a-z0-9_]*)", code))
            for group in re.findall(r"(?<!::)\b" + re.escape(ups) + r"\{([^}]*)\}", code):
                used.update(re.findall(r"\b([a-z_][a-z0-9_]*)\b", group))
            used.update(re.findall(r"\bcrate::" + re.escape(module_path) + r"::([a-z_][a-z0-9_]*)", code))
            edges[child] |= (used & children) - {child}
        state = {}
        stack = []

        def visit(node):
            state[node] = 1
            stack.append(node)
            for nxt in sorted(edges[node]):
                if state.get(nxt) == 1:
                    cycle = stack[stack.index(nxt):] + [nxt]
                    problems.append(f"src/{module_path}: submodules import in a circle: "
                                    + " → ".join(cycle))
                elif nxt not in state:
                    visit(nxt)
            stack.pop()
            state[node] = 2

        for node in sorted(edges):
            if node not in state:
                visit(node)
    return problems


def main():
    layers = stated_layers()
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    files = sorted(SRC.rglob("*.rs"))
    present = {m for m in map(module_of, files) if m}
    problems = []
    for name in sorted(present - rank.keys()):
        problems.append(f"module `{name}` is not in ARCHITECTURE.md's dependency order: add it")
    for name in sorted(rank.keys() - present):
        problems.append(f"ARCHITECTURE.md's dependency order lists `{name}`, which is no module")
    for path in files:
        module = module_of(path)
        if module not in rank:
            continue
        for used in sorted(uses(path, present) - {module}):
            if used in rank and rank[used] >= rank[module]:
                where = "its own layer" if rank[used] == rank[module] else "a higher layer"
                rel = path.relative_to(ROOT)
                problems.append(f"{rel}: `{module}` uses `{used}`, in {where}")
    problems.extend(submodule_cycles())
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("layering-check: one way, lowest first:")
    for layer in layers:
        print("  " + ", ".join(layer))


if __name__ == "__main__":
    main()
