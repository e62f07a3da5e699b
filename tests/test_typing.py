"""The public API is typed: py.typed ships, and every public function, method and property
says what it takes and returns (``mypy multifrost`` itself runs in scripts/test.sh)."""
import importlib
import inspect
import pathlib
import pkgutil

import multifrost

PACKAGE = pathlib.Path(multifrost.__file__).parent


def _modules():
    for info in pkgutil.walk_packages(multifrost.__path__, "multifrost."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def _unannotated(fn, where: str) -> list[str]:
    annotations = fn.__annotations__
    params = [name for name in inspect.signature(fn).parameters if name not in ("self", "cls")]
    missing = [f"{where}({name})" for name in params if name not in annotations]
    if "return" not in annotations and fn.__name__ != "__init__":
        missing.append(f"{where} -> ?")
    return missing


def _public_callables(module):
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield obj, f"{module.__name__}.{name}"
        elif inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(value, property):
                    value = value.fget
                elif isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                # only what the class itself defines (not the __init__ typing.Protocol makes up)
                if inspect.isfunction(value) and value.__qualname__.startswith(obj.__qualname__ + "."):
                    yield value, f"{module.__name__}.{name}.{attr}"


def test_py_typed_ships_with_the_package():
    assert (PACKAGE / "py.typed").is_file()
    assert (PACKAGE / "_codec.pyi").is_file()  # mypy's view of the compiled codec
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert '"py.typed"' in pyproject and "mypy" in pyproject


def test_every_public_function_method_and_property_is_annotated():
    missing = []
    checked = 0
    for module in _modules():
        for fn, where in _public_callables(module):
            checked += 1
            missing += _unannotated(fn, where)
    assert checked > 150
    assert not missing, "\n".join(missing)


def test_the_compiled_codec_stub_matches_the_pure_python_twin():
    from multifrost import _codec_fallback
    stub = (PACKAGE / "_codec.pyi").read_text()
    for name in ("pack_message", "unpack_message"):
        if f"from ._codec_fallback import {name} as {name}" in stub:
            continue  # the twin's own signature (pack_message's overloads), the same by construction
        params = list(inspect.signature(getattr(_codec_fallback, name)).parameters)
        assert f"def {name}(" in stub
        assert all(param in stub for param in params), (name, params)
    assert "def unpack_message(" in stub  # at least one is checked here
