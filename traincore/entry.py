"""Running a package's module as a file, as Microsoft's LoRA repo does (`python src/gpt2_ft.py`).

NLG/src and NLU/src are the packages `nlg` and `nlu` (pyproject maps them). Run as a file, a
module would otherwise see its folder as the first entry of sys.path, so `import model` in one
folder and `import model` in the other would name different files. An entry file calls
`as_package(__file__, "nlg")` first: its folder leaves sys.path and becomes the package, whether
or not `pip install -e .` was run.
"""
import importlib.util
import os
import sys


def as_package(file: str, name: str) -> None:
    here = os.path.dirname(os.path.realpath(file))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    have = sys.modules.get(name)
    if have is not None and here in [os.path.realpath(p) for p in getattr(have, "__path__", [])]:
        return
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(here, "__init__.py"), submodule_search_locations=[here])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module      # this checkout's folder, even if another one is installed
    spec.loader.exec_module(module)
