"""Shared test fixtures.

NLG/src and NLU/src are the packages `nlg` and `nlu` (pip install -e .). The folders of plain
scripts the tests import (the scorers, the demo's generators, the math pipeline) go on sys.path
here, the one place the tests edit it. Data the tests may read lives in ../shared beside the checkout; a user's clone
may not have it, so tests that need it skip with a clear message.
"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LORA_SHARED_DIR", ROOT.parent / "shared"))
for sub in ("NLG/eval", "NLG/demo", "NLG/MetaMathQA"):
    p = str(ROOT / sub)
    if p not in sys.path:
        sys.path.insert(0, p)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip when this clone has no ../shared beside it."""
    d = SHARED / "data"
    if not d.is_dir():
        pytest.skip(f"{d} not found: the shared test data sits beside the checkout in CI")
    return d


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    d = SHARED / "fixtures"
    if not d.is_dir():
        pytest.skip(f"{d} not found: the shared fixtures sit beside the checkout in CI")
    return d


def pytest_collection_modifyitems(config, items):
    """The end-to-end runs first: with `-n 2` (pytest-xdist) the two workers share them at the
    start and the many short tests fill in after, instead of one long run finishing alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
