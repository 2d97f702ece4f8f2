"""The built-in methods' cards, one module each: its `register(...)` call (see
loralib/registry.py). Every module in this folder is loaded, so adding a method adds its card
here and its layer beside loralib/base.py, and nothing else. Cards import no torch."""
import importlib
import pkgutil

for _card in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_card.name}")
