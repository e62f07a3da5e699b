"""The layering of docs/architecture.md: a module imports only modules of its rank or below."""
import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "multifrost"

RANK = {
    "errors": 0,
    "_limits": 1, "_pieces": 1, "_codec_slow": 1, "_codec": 1, "_codec_fallback": 1, "codec": 1, "timeouts": 1, "heap": 1, "spin": 1,
    "protocol": 2, "extensions": 2, "current_call": 2, "tracing": 2, "wire": 2, "spawn_env": 2,
    "transports": 3, "registry": 3, "registry_redis": 3, "registries": 3, "hostaddr": 3, "registry_lock": 3, "process": 3, "metrics": 3, "logs": 3,
    "parent_watch": 3, "options": 3, "child_loop": 3, "spin_loop": 3,
    "channel_base": 4, "channel_waiters": 4, "channel_sync": 4, "channel_async": 4, "channel": 4, "target": 4, "proxy": 4, "exit_hooks": 4, "streams": 4,
    "held": 4, "child_io": 4, "child_methods": 4, "child_shutdown": 4, "child_streams": 4, "child_ext": 4, "child_watchdog": 4,
    "parent": 5, "targets": 5, "child": 5, "runner": 5, "pool": 5, "service": 5, "service_pool": 5,
    "cli": 6, "cli_hosts": 6, "__main__": 6, "_demo_worker": 6, "__init__": 6,
}


# The two sides of a call: a parent-side module never imports a child-side one (at run time),
# so that a reader of one side need not hold the other in their head.
PARENT_SIDE = {"parent", "options", "target", "targets", "channel", "channel_base", "channel_waiters", "channel_sync", "channel_async",
               "streams", "proxy", "exit_hooks", "pool",
               "metrics", "process", "service_pool"}
CHILD_SIDE = {"child", "runner", "held", "child_io", "child_methods", "child_shutdown", "child_streams", "child_ext",
              "parent_watch", "service", "child_loop", "child_watchdog"}


# Inside the parent package (multifrost/parent/), the same rule one level down: the pure
# lifecycle core at the bottom, the facade at the top.
PARENT_RANK = {
    "circuit": 0, "heartbeats": 0, "events": 0,
    "lifecycle": 1,
    "calls": 2, "output": 2,
    "driver": 3,
    "sync_driver": 4, "async_driver": 4,
    "worker": 5,
    "__init__": 6,
}
#: What the lifecycle core may not import, directly or through another multifrost module: it
#: does no I/O, waits for nothing and reads no clock (its drivers do).
IMPURE = {"asyncio", "threading", "socket", "select", "selectors", "zmq", "subprocess", "time"}
CORE = ("lifecycle", "events", "circuit", "heartbeats")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``: an import made for
    annotations only (a helper naming the ChildWorker it serves) is no runtime dependency."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for other in node.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield node
        yield from _runtime_nodes(node)


def internal_imports(path: pathlib.Path) -> set[str]:
    """First-level multifrost modules that ``path`` imports at run time."""
    text = path.read_text()
    found = set()
    if path.suffix == ".pyx":
        for match in re.finditer(r"^\s*(?:from|cimport)\s+\.?(\w+)", text, re.M):
            found.add(match.group(1))
        return {m for m in found if m in RANK}
    for node in _runtime_nodes(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").startswith("multifrost"):
                parts = node.module.split(".")
                found.add(parts[1] if len(parts) > 1 else "__init__")
            elif node.level > 0:
                inside = path.parent.name if path.parent != PACKAGE else None
                if inside in ("transports", "parent") and node.level == 1:
                    found.add(inside)
                elif node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("multifrost."):
                    found.add(alias.name.split(".")[1])
    return found


def sources():
    return sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".pyx"))


def test_every_module_has_a_rank():
    unknown = {module_name(p) for p in sources()} - set(RANK)
    assert not unknown, f"add these modules to RANK and docs/architecture.md: {unknown}"


def test_no_module_imports_a_higher_layer():
    wrong = []
    for path in sources():
        me = module_name(path)
        for other in internal_imports(path):
            if other in RANK and RANK[other] > RANK[me]:
                wrong.append(f"{path.relative_to(PACKAGE)} ({me}, rank {RANK[me]}) imports {other} (rank {RANK[other]})")
    assert not wrong, "\n".join(wrong)


def test_the_table_is_documented():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for name in RANK:
        shown = f"{name}/" if name in ("transports", "parent") else (f"{name}.pyx" if name == "_codec" else f"{name}.py")
        assert shown in doc, f"docs/architecture.md does not mention {shown}"
    for name in set(PARENT_RANK) - {"__init__"}:
        assert f"`{name}.py`" in doc, f"docs/architecture.md does not mention parent/{name}.py"


def test_imports_for_annotations_only_are_told_apart(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from typing import TYPE_CHECKING\nfrom . import errors, codec\n"
                      "if TYPE_CHECKING:\n    from .child import ChildWorker\nelse:\n    from .parent import ParentWorker\n")
    assert internal_imports(sample) == {"errors", "codec", "parent"}


def test_the_parent_side_never_imports_the_child_side():
    assert set(RANK) >= PARENT_SIDE | CHILD_SIDE and not PARENT_SIDE & CHILD_SIDE
    wrong = [f"{path.relative_to(PACKAGE)} imports {other}" for path in sources()
             if module_name(path) in PARENT_SIDE for other in internal_imports(path) if other in CHILD_SIDE]
    assert not wrong, "\n".join(wrong)


def parent_imports(path: pathlib.Path) -> set[str]:
    """The modules of the parent package that ``path`` (one of them) imports at run time."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module] if node.module else [alias.name for alias in node.names])
    return found


def test_parent_package_modules_import_only_lower_ones():
    modules = sorted((PACKAGE / "parent").glob("*.py"))
    assert {p.stem for p in modules} == set(PARENT_RANK), "add new parent modules to PARENT_RANK"
    wrong = [f"parent/{p.name} imports {other}" for p in modules for other in parent_imports(p)
             if PARENT_RANK[other] >= PARENT_RANK[p.stem] and p.stem != "__init__"]
    assert not wrong, "\n".join(wrong)


def _std_imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add((node.module or "").split(".")[0])
    return found


def test_the_lifecycle_core_does_no_io_and_reads_no_clock():
    """lifecycle.py and what it stands on import none of IMPURE, even through another module."""
    seen, todo, wrong = set(), [PACKAGE / "parent" / f"{name}.py" for name in CORE], []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        wrong += [f"{path.relative_to(PACKAGE)} imports {m}" for m in _std_imports(path) & IMPURE]
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                base = path.parent if node.level == 1 else PACKAGE
                todo.append(base.joinpath(*node.module.split(".")).with_suffix(".py"))
    assert not wrong, "\n".join(wrong)
    assert not {"asyncio", "threading", "time"} & set(vars(__import__("multifrost.parent.lifecycle",
                                                                    fromlist=["x"])))


def test_the_parent_asks_its_target_instead_of_switching_on_its_class():
    """The Target protocol (target.py) says what differs between spawn, connect and in-process."""
    for name in [f"parent/{p.name}" for p in (PACKAGE / "parent").glob("*.py")] + ["streams.py", "pool.py", "channel.py"]:
        text = (PACKAGE / name).read_text()
        assert not re.search(r"isinstance\([^)]*Target\b", text), name


#: Modules allowed over the size limit: the codec twins.
LONG_ALLOWED = {"_codec.pyx", "_codec_fallback.py"}


def test_no_module_is_over_400_lines():
    """A module has one job a reader can hold in their head."""
    long = {p.relative_to(PACKAGE).as_posix(): n for p in sources()
            if (n := len(p.read_text().splitlines())) > 400 and p.name not in LONG_ALLOWED}
    assert not long, long
