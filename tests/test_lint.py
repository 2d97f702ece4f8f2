"""The code base passes ruff with the project's configuration (pyproject.toml [tool.ruff]), and no
module outside the entry files and tests/conftest.py edits sys.path."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff():
    try:
        import ruff  # noqa: F401
    except ImportError:
        if shutil.which("ruff") is None:
            pytest.skip("ruff is not installed (pip install -r requirements-dev.txt)")
        return ["ruff"]
    return [sys.executable, "-m", "ruff"]


def test_ruff_finds_nothing():
    r = subprocess.run(_ruff() + ["check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def _edits_sys_path(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "path" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            return True
    return False


def test_library_modules_do_not_edit_sys_path():
    """NLG/src and NLU/src are packages: only their entry files (run as `python src/X.py`) touch
    sys.path, through traincore.entry; library modules import `nlg.*` / `nlu.*`."""
    offenders = []
    for pkg in ("NLG/src", "NLU/src", "loralib", "traincore"):
        for f in sorted((ROOT / pkg).glob("*.py")):
            entry = f.name.startswith(("gpt2_", "format_converting_", "run_glue")) or \
                f.name == "entry.py"
            if not entry and _edits_sys_path(f):
                offenders.append(str(f.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.parametrize("where,argv,module", [
    ("NLG", ["src/gpt2_ft.py", "--train_data", "none.jsonl", "--valid_data", "none.jsonl",
             "--max_step", "1"], "nlg.model"),
    ("NLU", ["src/run_glue.py", "--task_name", "no_such_task", "--output_dir", "none"],
     "nlu.roberta")])
def test_entry_files_import_the_package_not_the_folder(where, argv, module):
    """Run as a file (Python puts the script's folder first on sys.path), an entry file still
    imports its folder as the package (`nlg.model`), never as top-level modules (`model`). The
    commands fail on their input (exit 2) once the run's modules are imported."""
    r = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=ROOT / where,
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr[-2000:]
    names = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    own = {f.stem for f in (ROOT / where / "src").glob("*.py")} - {"__init__"}
    assert module in names, sorted(names)
    assert not (own & names), sorted(own & names)


@pytest.mark.parametrize("where,script", [
    ("NLG", "src/gpt2_ft.py"), ("NLG", "src/gpt2_ft_nola.py"), ("NLG", "src/gpt2_beam.py"),
    ("NLG", "src/gpt2_beam_lorma_pi.py"), ("NLU", "src/run_glue.py"),
    ("NLG/MetaMathQA", "train_math_lorma.py")])
def test_help_answers_without_importing_torch(where, script):
    """--help builds the whole parser (every method's flags and the official spellings) from
    the methods' cards and the scripts' light halves: no torch, no transformers."""
    r = subprocess.run([sys.executable, "-X", "importtime", script, "--help"], cwd=ROOT / where,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--lora_dim" in r.stdout and "--nola_rank" in r.stdout and "--lorma_type" in r.stdout
    names = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    heavy = sorted(n for n in names if n.split(".")[0] in ("torch", "transformers", "numpy"))
    assert heavy == [], heavy[:5]


def test_every_package_folder_is_installed():
    """A plain `pip install .` (not -e) ships only the packages pyproject.toml lists: every folder
    with an __init__.py under the installed roots must be among them (loralib.methods holds the
    methods' cards; without it the registry cannot load)."""
    tomllib = pytest.importorskip("tomllib")
    st = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {"loralib": ROOT / "loralib", "traincore": ROOT / "traincore",
             **{name: ROOT / path for name, path in st["package-dir"].items()}}
    found = set()
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((name, *rel)))
    assert found == set(st["packages"]), sorted(found ^ set(st["packages"]))
