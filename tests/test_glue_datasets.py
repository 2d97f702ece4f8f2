"""create_datasets.sh --tasks glue, run offline: GLUE from a local folder (task folders, GLUE's
archives, MRPC's raw corpus split as download_glue_data.py splits it), and download mode against
file:// mirrors (pinned hashes enforced, tasks in place kept). Outputs are read back with
NLU/src/glue_data.py, the reader the NLU code uses."""
import hashlib
import os
import random
import shutil
import subprocess
import zipfile

import pytest

from nlu import glue_data

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not installed")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="file:// mirrors need curl")

ALL_FOLDERS = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE"]
FOLDER_TASK = {spec.folder: name for name, spec in glue_data.TASKS.items()}


def run(repo_root, *args, env=None, cwd=None):
    full_env = dict(os.environ)
    for k in ("LORA_DATA_FROM", "LORA_DATA_OUT", "LORA_DATA_URL_BASE", "LORA_GLUE_OUT", "LORA_GLUE_URL_BASE"):
        full_env.pop(k, None)
    full_env.update(env or {})
    return subprocess.run([BASH, str(repo_root / "create_datasets.sh"), *map(str, args)], cwd=cwd or repo_root,
                          capture_output=True, text=True, env=full_env)


def files_under(d):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def glue_src(shared_data):
    d = shared_data / "glue"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d


def test_local_folder_copies_checks_and_lists_missing_tasks(repo_root, shared_data, glue_src, tmp_path):
    out = tmp_path / "glue"
    # run from elsewhere, with --from the parent of glue/ (as for the NLG data)
    r = run(repo_root, "--tasks", "glue", "--from", shared_data, "--glue-out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    present = [f for f in ALL_FOLDERS if (glue_src / f).is_dir()]
    assert present, "no GLUE task in the shared data"
    assert files_under(out) == sorted(p.relative_to(glue_src).as_posix() for f in present
                                      for p in (glue_src / f).glob("*.tsv"))
    for rel in files_under(out):
        assert (out / rel).read_bytes() == (glue_src / rel).read_bytes()
    skipped = r.stdout.split("(skipped):")[1]
    for f in ALL_FOLDERS:
        assert (f"glue/{f}" in skipped) == (f not in present)
    # readable by the NLU reader, with the counts the script reports
    for f in present:
        task = FOLDER_TASK[f]
        for split in ("train", "dev"):
            got = glue_data.load_split(str(out), task, split)
            want = glue_data.load_split(str(glue_src), task, split)
            assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in want.items()}
            for k, v in got.items():
                assert f"  {k}.tsv: {len(v)} examples" in r.stdout
    assert not (tmp_path / "data").exists() and not any(p.name.startswith(".") for p in out.iterdir())
    # --from may also be the glue folder itself; --glue-tasks takes GLUE's or glue_data's names
    r = run(repo_root, "--tasks", "glue", "--glue-tasks", "rte,SST-2", "--from", glue_src,
            "--glue-out", tmp_path / "g2")
    assert r.returncode == 0, r.stderr
    assert files_under(tmp_path / "g2") == ["RTE/dev.tsv", "RTE/train.tsv", "SST-2/dev.tsv", "SST-2/train.tsv"]


def test_bad_or_incomplete_task_is_not_installed(repo_root, glue_src, tmp_path):
    src = tmp_path / "src" / "glue"
    shutil.copytree(glue_src / "CoLA", src / "CoLA")
    (src / "RTE").mkdir()
    shutil.copy(glue_src / "RTE" / "train.tsv", src / "RTE" / "train.tsv")  # no dev.tsv
    lines = (src / "CoLA" / "dev.tsv").read_text(encoding="utf8").split("\n")
    lines[4] = lines[4].replace("\t", " ", 1)  # line 5 loses a field
    (src / "CoLA" / "dev.tsv").write_text("\n".join(lines), encoding="utf8")
    out = tmp_path / "glue"
    r = run(repo_root, "--tasks", "glue", "--glue-tasks", "CoLA,RTE", "--from", src.parent, "--glue-out", out)
    assert r.returncode == 1
    failed = r.stderr.split("FAILED:")[1]
    assert f"glue/CoLA: {src / 'CoLA' / 'dev.tsv'}:5: expected 4 tab-separated fields" in failed
    assert "glue/RTE/dev.tsv" in r.stdout.split("(skipped):")[1]
    assert files_under(out) == []
    r = run(repo_root, "--tasks", "glue", "--glue-tasks", "cola,nope", "--from", src.parent, "--glue-out", out)
    assert r.returncode == 2 and "unknown GLUE task 'nope'" in r.stderr
    r = run(repo_root, "--tasks", "glue,nope", "--glue-out", out)
    assert r.returncode == 2 and "unknown task 'nope'" in r.stderr


def _raw_mrpc(glue_src, folder):
    """MRPC's raw training file and dev id list, rebuilt from a GLUE MRPC folder: train and dev rows
    interleaved in their own orders, CRLF line ends and trailing blanks as in the corpus' files."""
    read = lambda p: p.read_text(encoding="utf-8-sig").rstrip("\n").split("\n")  # noqa: E731
    train, dev = read(glue_src / "MRPC" / "train.tsv"), read(glue_src / "MRPC" / "dev.tsv")
    rows, i, j, rng = [], 1, 1, random.Random(0)
    while i < len(train) or j < len(dev):
        if j >= len(dev) or (i < len(train) and rng.random() < 0.9):
            rows.append(train[i]); i += 1  # noqa: E702
        else:
            rows.append(dev[j]); j += 1  # noqa: E702
    folder.mkdir(parents=True)
    with open(folder / "msr_paraphrase_train.txt", "w", encoding="utf-8", newline="") as f:
        f.write("\ufeff" + train[0] + "\r\n" + "".join(r + " \r\n" for r in rows))
    ids = [r.split("\t")[1:3] for r in dev[1:]]
    random.Random(1).shuffle(ids)
    (folder / "mrpc_dev_ids.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in ids))
    with open(folder / "msr_paraphrase_test.txt", "w", encoding="utf-8", newline="") as f:
        f.write("\ufeff" + train[0] + "\r\n" + "".join(r + "\r\n" for r in dev[1:4]))
    return dev


def test_mrpc_split_from_the_raw_corpus(repo_root, glue_src, tmp_path):
    src = tmp_path / "src"
    dev = _raw_mrpc(glue_src, src / "MRPC")
    out = tmp_path / "glue"
    r = run(repo_root, "--tasks", "glue", "--glue-tasks", "mrpc", "--from", src, "--glue-out", out)
    assert r.returncode == 0, r.stderr
    assert "differs from the published msr_paraphrase_train.txt" in r.stderr  # a rebuilt file, not SentEval's
    # the split download_glue_data.py makes is GLUE's MRPC
    for f in ("train.tsv", "dev.tsv"):
        assert (out / "MRPC" / f).read_bytes() == (glue_src / "MRPC" / f).read_bytes()
    expected_test = ["index\t#1 ID\t#2 ID\t#1 String\t#2 String"] + \
        [f"{k}\t" + "\t".join(row.split("\t")[1:]) for k, row in enumerate(dev[1:4])]
    assert (out / "MRPC" / "test.tsv").read_text(encoding="utf8") == "\n".join(expected_test) + "\n"
    # a dev pair the corpus lacks means the wrong corpus file: nothing is installed
    with open(src / "MRPC" / "mrpc_dev_ids.tsv", "a") as f:
        f.write("1\t2\n")
    r = run(repo_root, "--tasks", "glue", "--glue-tasks", "mrpc", "--from", src, "--glue-out", tmp_path / "g2")
    assert r.returncode == 1
    assert f"1 of the {len(dev)} dev pairs of {src / 'MRPC' / 'mrpc_dev_ids.tsv'} are not in" in r.stderr
    assert files_under(tmp_path / "g2") == []


def _zip_task(glue_src, folder, dest):
    with zipfile.ZipFile(dest, "w") as z:
        for p in sorted((glue_src / folder).glob("*.tsv")):
            z.write(p, f"{folder}/{p.name}")


@needs_curl
def test_archives_local_and_downloaded(repo_root, glue_src, tmp_path):
    # a local copy of GLUE's archive is unpacked (with a warning: it is not the published file)
    src = tmp_path / "src"
    src.mkdir()
    _zip_task(glue_src, "CoLA", src / "CoLA.zip")
    out = tmp_path / "glue"
    r = run(repo_root, "--tasks", "glue", "--glue-tasks", "cola", "--from", src, "--glue-out", out)
    assert r.returncode == 0, r.stderr
    assert "differs from the published CoLA.zip" in r.stderr
    assert files_under(out) == ["CoLA/dev.tsv", "CoLA/train.tsv"]
    assert (out / "CoLA" / "train.tsv").read_bytes() == (glue_src / "CoLA" / "train.tsv").read_bytes()
    # downloads must match the pinned hash: the same archive from a mirror is refused
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(src / "CoLA.zip", mirror / "CoLA.zip")
    env = {"LORA_GLUE_URL_BASE": mirror.as_uri()}
    dl = tmp_path / "dl"
    r = run(repo_root, "--tasks", "glue", "--glue-tasks", "CoLA,RTE,MRPC", "--glue-out", dl, env=env)
    assert r.returncode == 1
    failed = r.stderr.split("FAILED:")[1]
    zip_sha = hashlib.sha256((src / "CoLA.zip").read_bytes()).hexdigest()
    assert f"download glue/CoLA.zip (sha256 mismatch from {mirror.as_uri()}/CoLA.zip: got {zip_sha}, " \
           "expected f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff)" in failed
    assert "download glue/RTE.zip (download failed" in failed
    assert "download glue/msr_paraphrase_train.txt (download failed" in failed
    assert files_under(dl) == []  # no half-installed task, no partial file left behind
    # a task already in place (and readable) is kept without downloading
    r = run(repo_root, "--tasks", "glue", "--glue-tasks", "cola", "--glue-out", out, env=env)
    assert r.returncode == 0, r.stderr
    assert "CoLA: in place" in r.stdout and "downloading CoLA.zip" not in r.stdout
    # ... but not when it is broken
    (out / "CoLA" / "dev.tsv").write_text("x\n", encoding="utf8")
    r = run(repo_root, "--tasks", "glue", "--glue-tasks", "cola", "--glue-out", out, env=env)
    assert r.returncode == 1 and "downloading it again" in r.stderr and "sha256 mismatch" in r.stderr
