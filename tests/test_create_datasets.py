"""create_datasets.sh and download_pretrained_checkpoints.sh, run end to end offline: from a local
folder, and in download mode against file:// mirrors (so checksum checks, recording and resuming
really run)."""
import hashlib
import json
import os
import random
import shutil
import subprocess

import pytest

from nlg import encoder
from nlg import format_converting_dart
from nlu import glue_data
from nlg import format_converting_e2e
from nlg import format_converting_webnlg
from nlg import gpt2_encode

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not installed")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="file:// mirrors need curl")

DEV_SPLITS = {  # raw file -> (task folder, converter)
    "e2e/valid.txt": ("e2e", format_converting_e2e),
    "webnlg_challenge_2017/dev.json": ("webnlg_challenge_2017", format_converting_webnlg),
    "dart/dart-v1.1.1-full-dev.json": ("dart", format_converting_dart),
}
ABSENT = ["e2e/train.txt", "e2e/test.txt", "webnlg_challenge_2017/train.json",
          "webnlg_challenge_2017/test.json", "dart/dart-v1.1.1-full-train.json", "dart/dart-v1.1.1-full-test.json"]


def run(repo_root, script, *args, env=None, cwd=None):
    full_env = dict(os.environ)
    for k in ("LORA_DATA_FROM", "LORA_DATA_OUT", "LORA_DATA_URL_BASE", "LORA_CKPT_URL_BASE", "LORA_VOCAB_URL_BASE",
              "LORA_ROBERTA_URL_BASE", "LORA_GLUE_OUT", "LORA_GLUE_URL_BASE"):
        full_env.pop(k, None)
    # Tests never ask the real official host for a published hash (no traffic leaves the
    # machine); the fake-curl tests name it themselves.
    full_env["LORA_OFFICIAL_HASH_BASE"] = ""
    full_env.update(env or {})
    return subprocess.run([BASH, str(repo_root / script), *map(str, args)], cwd=cwd or repo_root,
                          capture_output=True, text=True, env=full_env)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("script", ["create_datasets.sh", "download_pretrained_checkpoints.sh"])
def test_scripts_parse_and_show_help(repo_root, script):
    assert subprocess.run([BASH, "-n", str(repo_root / script)]).returncode == 0
    r = run(repo_root, script, "--help")
    assert r.returncode == 0 and "--vocab" in r.stdout
    r = run(repo_root, script, "--bogus")
    assert r.returncode == 2 and "unknown argument '--bogus'" in r.stderr


def test_local_folder_builds_the_splits_it_has(repo_root, shared_data, tmp_path):
    out = tmp_path / "data"
    # run from elsewhere: the script finds NLG/src from its own location
    r = run(repo_root, "create_datasets.sh", "--from", shared_data, "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "differs from the published" not in r.stderr  # the pinned sha256s are these files'
    for rel in ABSENT:
        assert rel in r.stdout.split("not in")[1]
    built = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert built == sorted(f"{d}/{s}" for d, _ in DEV_SPLITS.values()
                           for s in ("valid.jsonl", "valid_formatted.jsonl"))
    # identical to running the two steps by hand
    enc = encoder.get_encoder(str(shared_data / "vocab"))
    for rel, (folder, conv) in DEV_SPLITS.items():
        formatted, ids = tmp_path / f"{folder}_f.jsonl", tmp_path / f"{folder}.jsonl"
        conv.convert(str(shared_data / rel), str(formatted))
        gpt2_encode.encode_file(enc, str(formatted), str(ids), True, True, progress=False)
        assert (out / folder / "valid_formatted.jsonl").read_bytes() == formatted.read_bytes()
        assert (out / folder / "valid.jsonl").read_bytes() == ids.read_bytes()


def test_local_folder_env_var_tasks_and_nothing_found(repo_root, shared_data, tmp_path):
    r = run(repo_root, "create_datasets.sh", "--out", tmp_path / "d", "--tasks", "e2e",
            env={"LORA_DATA_FROM": str(shared_data)})
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["e2e"]
    (tmp_path / "empty").mkdir()
    r = run(repo_root, "create_datasets.sh", "--from", tmp_path / "empty", "--vocab", shared_data / "vocab",
            "--out", tmp_path / "d2")
    assert r.returncode != 0 and "nothing was built" in r.stderr
    r = run(repo_root, "create_datasets.sh", "--from", shared_data, "--vocab", tmp_path / "empty",
            "--out", tmp_path / "d3")
    assert r.returncode != 0 and "no GPT-2 vocabulary" in r.stderr and "--formatted-only" in r.stderr
    # the text splits alone (an --backbone hf: run encodes them itself): no vocabulary needed
    r = run(repo_root, "create_datasets.sh", "--from", shared_data, "--vocab", tmp_path / "empty",
            "--out", tmp_path / "d4", "--tasks", "e2e", "--formatted-only")
    assert r.returncode == 0, r.stderr
    built = sorted(p.name for p in (tmp_path / "d4" / "e2e").iterdir())
    assert built == ["valid_formatted.jsonl"]         # Microsoft's valid.txt read in place
    assert (tmp_path / "d4" / "e2e" / "valid_formatted.jsonl").read_bytes() == \
        (tmp_path / "d" / "e2e" / "valid_formatted.jsonl").read_bytes()


@needs_curl
def test_download_mode_verifies_and_records_checksums(repo_root, shared_data, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "e2e").mkdir(parents=True)
    shutil.copy(shared_data / "e2e" / "valid.txt", mirror / "e2e" / "valid.txt")
    with open(mirror / "e2e" / "valid.txt", "a", encoding="utf8") as f:
        f.write("name : Extra||Tampered .\n")  # not the published file any more
    (mirror / "e2e" / "train.txt").write_text("name : A||A is fine .\n", encoding="utf8")  # no pinned hash
    out = tmp_path / "data"
    env = {"LORA_DATA_URL_BASE": mirror.as_uri()}
    args = ("--out", out, "--vocab", shared_data / "vocab", "--tasks", "e2e")
    # a split without a known hash is refused, naming how to supply one ...
    r = run(repo_root, "create_datasets.sh", *args, env=env)
    assert r.returncode == 1 and "download e2e/train.txt (no sha256 to check" in r.stderr
    assert "LORA_TRUST_FIRST_DOWNLOAD=1" in r.stderr and not (out / "e2e" / "train.txt").exists()
    # ... or its first download's hash is recorded when the user says so
    env["LORA_TRUST_FIRST_DOWNLOAD"] = "1"
    r = run(repo_root, "create_datasets.sh", *args, env=env)
    assert r.returncode == 1
    failed = r.stderr.split("FAILED:")[1]
    assert "download e2e/valid.txt (sha256 mismatch" in failed
    assert "download e2e/test.txt (download failed" in failed
    assert not (out / "e2e" / "valid.txt").exists() and not (out / "e2e" / "valid.txt.part").exists()
    # unknown hash: recorded on first download, then enforced
    train_sha = sha256(mirror / "e2e" / "train.txt")
    assert (out / "checksums.sha256").read_text() == f"{train_sha}  e2e/train.txt\n"
    assert (out / "e2e" / "train.jsonl").exists()
    (out / "e2e" / "train.txt").unlink()
    (mirror / "e2e" / "train.txt").write_text("name : B||B was swapped .\n", encoding="utf8")
    r = run(repo_root, "create_datasets.sh", *args, env=env)
    assert "download e2e/train.txt (sha256 mismatch" in r.stderr and f"expected {train_sha}" in r.stderr
    # the published dev file passes its pinned hash and is built
    shutil.copy(shared_data / "e2e" / "valid.txt", mirror / "e2e" / "valid.txt")
    r = run(repo_root, "create_datasets.sh", *args, env=env)
    assert sha256(out / "e2e" / "valid.txt") == sha256(shared_data / "e2e" / "valid.txt")
    assert (out / "e2e" / "valid.jsonl").exists()


@needs_curl
def test_checkpoint_download_checks_resumes_and_reports(repo_root, shared_data, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "gpt2-pytorch_model.bin").write_bytes(os.urandom(4096))  # not the real gpt2: must be refused
    medium = os.urandom(200_000)
    (mirror / "gpt2-medium-pytorch_model.bin").write_bytes(medium)
    ckpt, vocab = tmp_path / "ckpt", tmp_path / "vocab"
    ckpt.mkdir()
    (ckpt / "gpt2-medium-pytorch_model.bin.part").write_bytes(medium[:70_000])  # an interrupted download
    env = {"LORA_CKPT_URL_BASE": mirror.as_uri(), "LORA_VOCAB_URL_BASE": (shared_data / "vocab").as_uri()}
    # without a hash to check against, a download is refused ...
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--out", ckpt, "--no-vocab", "--models",
            "gpt2-medium", env=env)
    assert r.returncode == 1 and "gpt2-medium-pytorch_model.bin: no sha256 to check it against" in r.stderr
    assert "LORA_TRUST_FIRST_DOWNLOAD=1" in r.stderr and not (ckpt / "gpt2-medium-pytorch_model.bin").exists()
    # ... unless the user accepts the first download's
    env["LORA_TRUST_FIRST_DOWNLOAD"] = "1"
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--out", ckpt, "--vocab-out", vocab, env=env)
    assert r.returncode == 1
    failed = r.stderr.split("FAILED:")[1]
    assert "gpt2-pytorch_model.bin: sha256 mismatch" in failed and "expected 7c5d3f4b" in failed
    assert "gpt2-large-pytorch_model.bin: download failed" in failed
    assert not (ckpt / "gpt2-pytorch_model.bin").exists()
    assert (ckpt / "gpt2-medium-pytorch_model.bin").read_bytes() == medium  # resumed to the full file
    assert (ckpt / "checksums.sha256").read_text() == \
        f"{hashlib.sha256(medium).hexdigest()}  gpt2-medium-pytorch_model.bin\n"
    for f in ("encoder.json", "vocab.bpe"):
        assert (vocab / f).read_bytes() == (shared_data / "vocab" / f).read_bytes()
    # a second run checks what is in place against the recorded hash
    (ckpt / "gpt2-medium-pytorch_model.bin").write_bytes(b"corrupted")
    (mirror / "gpt2-medium-pytorch_model.bin").write_bytes(b"also different")
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--out", ckpt, "--no-vocab", "--models", "gpt2-medium",
            env=env)
    assert r.returncode == 1 and "present but its sha256 is not" in r.stderr
    assert "gpt2-medium-pytorch_model.bin: sha256 mismatch" in r.stderr.split("FAILED:")[1]


def test_vocab_from_local_folder(repo_root, shared_data, tmp_path):
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--vocab-only", "--vocab-from", shared_data / "vocab",
            "--vocab-out", tmp_path / "vocab")
    assert r.returncode == 0, r.stderr
    assert encoder.get_encoder(str(tmp_path / "vocab")).eos_id == 50256
    other = tmp_path / "other"
    other.mkdir()
    (other / "encoder.json").write_text('{"<|endoftext|>": 0}')
    shutil.copy(shared_data / "vocab" / "vocab.bpe", other / "vocab.bpe")
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--vocab-only", "--vocab-from", other,
            "--vocab-out", tmp_path / "v2")
    assert r.returncode == 1 and "encoder.json: " in r.stderr and "sha256 differs" in r.stderr


def _fake_curl(bin_dir, content_file, etag):
    """A `curl` that answers HEAD requests with Hugging Face's X-Linked-Etag header and downloads
    by copying content_file, so the Hugging Face path runs offline."""
    bin_dir.mkdir()
    script = bin_dir / "curl"
    script.write_text(f"""#!/usr/bin/env bash
for a in "$@"; do
  [ "$a" = -sI ] && {{ printf 'HTTP/1.1 302 Found\\r\\nX-Linked-Etag: "{etag}"\\r\\n\\r\\n'; exit 0; }}
done
out=""; prev=""
for a in "$@"; do [ "$prev" = -o ] && out="$a"; prev="$a"; done
cp "{content_file}" "$out"
""")
    script.chmod(0o755)


@pytest.mark.parametrize("good_etag", [True, False])
def test_checkpoint_checked_against_hugging_face_published_sha256(repo_root, tmp_path, good_etag):
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(10_000))
    etag = sha256(blob) if good_etag else "0" * 64
    _fake_curl(tmp_path / "bin", blob, etag)
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "LORA_OFFICIAL_HASH_BASE": "https://huggingface.co"}
    ckpt = tmp_path / "ckpt"
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--no-vocab", "--models", "gpt2-large",
            "--out", ckpt, env=env)
    assert "huggingface.co/openai-community/gpt2-large/resolve/main/pytorch_model.bin" in r.stdout
    assert not (ckpt / "checksums.sha256").exists()  # a published hash is used, not recorded
    if good_etag:
        assert r.returncode == 0, r.stderr
        assert (ckpt / "gpt2-large-pytorch_model.bin").read_bytes() == blob.read_bytes()
    else:
        assert r.returncode == 1
        assert f"expected {'0' * 64}" in r.stderr  # every mirror's file was refused
        assert not (ckpt / "gpt2-large-pytorch_model.bin").exists()


ROBERTA_FILES = ("pytorch_model.bin", "vocab.json", "merges.txt", "config.json")


def _roberta_files(folder, shared_data, seed):
    """A stand-in for a Hugging Face RoBERTa folder: random weights, a small vocabulary with
    RoBERTa's special ids, GPT-2's merge list (which RoBERTa's merges.txt is)."""
    folder.mkdir(parents=True)
    (folder / "pytorch_model.bin").write_bytes(random.Random(seed).randbytes(5000))
    (folder / "vocab.json").write_text(json.dumps({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, f"w{seed}": 4}))
    shutil.copy(shared_data / "vocab" / "vocab.bpe", folder / "merges.txt")
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta", "seed": seed}))


def test_roberta_from_local_folder(repo_root, shared_data, tmp_path):
    src, out = tmp_path / "src", tmp_path / "nlu"
    _roberta_files(src / "roberta-base", shared_data, 1)
    _roberta_files(src / "roberta-large", shared_data, 2)
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--models", "roberta-large", "--roberta-from", src,
            "--nlu-out", tmp_path / "refused")
    assert r.returncode == 1 and "cannot be checked (no sha256 pinned or recorded)" in r.stderr
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--models", "nlu", "--roberta-from", src,
            "--nlu-out", out, env={"LORA_TRUST_FIRST_DOWNLOAD": "1"})
    assert r.returncode == 1
    assert "GPT-2 vocabulary" not in r.stdout  # RoBERTa has its own
    failed = r.stderr.split("FAILED:")[1]
    # roberta-base's files are pinned: the stand-ins are refused, GPT-2's merge list is accepted
    for f, want in (("pytorch_model.bin", "278b7a95"), ("vocab.json", "9e7f63c2"), ("config.json", "ef0185e2")):
        assert f"roberta-base/{f}: {src / 'roberta-base' / f} has sha256 " in failed and f"expected {want}" in failed
    assert sorted(p.name for p in (out / "roberta-base").iterdir()) == ["merges.txt"]
    # roberta-large: none pinned here, so copied and recorded, then enforced
    large = out / "roberta-large"
    for f in ROBERTA_FILES:
        assert (large / f).read_bytes() == (src / "roberta-large" / f).read_bytes()
    assert (large / "checksums.sha256").read_text() == "".join(
        f"{sha256(src / 'roberta-large' / f)}  {f}\n" for f in ROBERTA_FILES)
    tok = glue_data.RobertaTokenizer(str(large))
    assert (tok.bos_id, tok.pad_id, tok.eos_id) == (0, 1, 2)
    (src / "roberta-large" / "pytorch_model.bin").write_bytes(b"other weights")
    (src / "roberta-large" / "config.json").unlink()  # optional
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--models", "roberta-large",
            "--roberta-from", src / "roberta-large", "--nlu-out", out)  # one model: its own folder will do
    assert r.returncode == 1
    assert f"expected {sha256(large / 'pytorch_model.bin')}" in r.stderr.split("FAILED:")[1]
    assert "roberta-large/config.json: not in" in r.stdout and "roberta-large/vocab.json: copied" in r.stdout
    # GPT-2's encoder.json in RoBERTa's place would give wrong ids: refused
    other = tmp_path / "other"
    _roberta_files(other / "roberta-large", shared_data, 3)
    shutil.copy(shared_data / "vocab" / "encoder.json", other / "roberta-large" / "vocab.json")
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--models", "roberta-large", "--roberta-from", other,
            "--nlu-out", tmp_path / "nlu2", env={"LORA_TRUST_FIRST_DOWNLOAD": "1"})
    assert r.returncode == 1 and "roberta-large/vocab.json: " in r.stderr and "is not RoBERTa's vocabulary" in r.stderr
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--models", "roberta-medium", "--nlu-out", out)
    assert r.returncode == 1 and "roberta-medium: unknown model" in r.stderr


@needs_curl
def test_roberta_download_checks_resumes_and_reports(repo_root, shared_data, tmp_path):
    mirror, out = tmp_path / "mirror", tmp_path / "nlu"
    _roberta_files(mirror / "roberta-base", shared_data, 1)
    _roberta_files(mirror / "roberta-large", shared_data, 2)
    (mirror / "roberta-large" / "config.json").unlink()
    weights = (mirror / "roberta-large" / "pytorch_model.bin").read_bytes()
    (out / "roberta-large").mkdir(parents=True)
    (out / "roberta-large" / "pytorch_model.bin.part").write_bytes(weights[:1200])  # an interrupted download
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--models", "roberta-base,roberta-large",
            "--nlu-out", out, env={"LORA_ROBERTA_URL_BASE": mirror.as_uri(),
                                   "LORA_TRUST_FIRST_DOWNLOAD": "1"})
    assert r.returncode == 1
    failed = r.stderr.split("FAILED:")[1]
    assert "roberta-base/pytorch_model.bin: sha256 mismatch" in failed and "expected 278b7a95" in failed
    assert "roberta-large/config.json: download failed" in failed
    assert "merges.txt" not in failed and "roberta-large/pytorch_model.bin" not in failed
    assert (out / "roberta-base" / "merges.txt").read_bytes() == (shared_data / "vocab" / "vocab.bpe").read_bytes()
    assert (out / "roberta-large" / "pytorch_model.bin").read_bytes() == weights  # resumed to the full file
    assert (out / "roberta-large" / "checksums.sha256").read_text() == "".join(
        f"{sha256(mirror / 'roberta-large' / f)}  {f}\n" for f in ("pytorch_model.bin", "vocab.json", "merges.txt"))
    assert not (out / "roberta-base" / "checksums.sha256").exists()  # pinned files are not recorded


def test_roberta_checked_against_hugging_face_published_sha256(repo_root, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(10_000))
    _fake_curl(tmp_path / "bin", blob, sha256(blob))
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "LORA_OFFICIAL_HASH_BASE": "https://huggingface.co"}
    out = tmp_path / "nlu"
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--models", "roberta-large", "--nlu-out", out, env=env)
    assert r.returncode == 0, r.stderr
    assert "huggingface.co/FacebookAI/roberta-large/resolve/main/pytorch_model.bin" in r.stdout
    for f in ROBERTA_FILES:  # the stub serves the blob for every file and publishes its hash
        assert (out / "roberta-large" / f).read_bytes() == blob.read_bytes()
    assert not (out / "roberta-large" / "checksums.sha256").exists()


def _offline_curl(bin_dir, log):
    """A `curl` for a machine without network: every http(s) request fails to resolve (exit 6),
    and each call is logged."""
    bin_dir.mkdir()
    script = bin_dir / "curl"
    script.write_text(f"""#!/usr/bin/env bash
echo "$*" >> "{log}"
echo "curl: (6) Could not resolve host" >&2
exit 6
""")
    script.chmod(0o755)


def test_offline_fails_in_seconds_naming_every_source_and_the_routes(repo_root, tmp_path):
    log = tmp_path / "curl.log"
    _offline_curl(tmp_path / "bin", log)
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "LORA_OFFICIAL_HASH_BASE": "https://huggingface.co"}
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--out", tmp_path / "ckpt",
            "--vocab-out", tmp_path / "vocab", env=env)
    assert r.returncode == 1
    failed = r.stderr.split("FAILED:")[1]
    # gpt2 is pinned: every mirror was tried (and found unreachable) and is listed
    line = next(x for x in failed.splitlines() if "gpt2-pytorch_model.bin" in x)
    assert "host unreachable" in line and line.count("https://") == 3
    assert "unreachable:" in r.stderr and " huggingface.co " in r.stderr and "--vocab-from DIR" in r.stderr
    assert "--init_checkpoint random" in r.stderr and "LORA_CKPT_URL_BASE=file://" in r.stderr
    calls = log.read_text().splitlines()
    assert len(calls) <= 4, calls     # one probe per host, no download attempts


@needs_curl
def test_a_stale_part_with_a_garbage_prefix_is_fetched_again(repo_root, tmp_path):
    mirror, ckpt = tmp_path / "mirror", tmp_path / "ckpt"
    mirror.mkdir()
    ckpt.mkdir()
    good = os.urandom(50_000)
    (mirror / "gpt2-medium-pytorch_model.bin").write_bytes(good)
    (ckpt / "gpt2-medium-pytorch_model.bin.part").write_bytes(b"garbage" * 1000)
    env = {"LORA_CKPT_URL_BASE": mirror.as_uri(),
           "LORA_SHA256": f"gpt2-medium-pytorch_model.bin={hashlib.sha256(good).hexdigest()}"}
    r = run(repo_root, "download_pretrained_checkpoints.sh", "--out", ckpt, "--no-vocab",
            "--models", "gpt2-medium", env=env)
    assert r.returncode == 0, r.stderr
    assert "fetching it again from the start" in r.stderr
    assert (ckpt / "gpt2-medium-pytorch_model.bin").read_bytes() == good


def test_create_datasets_offline_fails_fast_with_the_routes(repo_root, shared_data, tmp_path):
    log = tmp_path / "curl.log"
    _offline_curl(tmp_path / "bin", log)
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "LORA_TRUST_FIRST_DOWNLOAD": "1"}
    r = run(repo_root, "create_datasets.sh", "--out", tmp_path / "data", "--vocab",
            shared_data / "vocab", "--tasks", "e2e,dart", env=env)
    assert r.returncode == 1
    assert "unreachable:" in r.stderr and "sources tried:" in r.stderr and "--from DIR" in r.stderr
    hosts = {line.split("://")[1].split("/")[0] for line in log.read_text().splitlines()}
    assert len(log.read_text().splitlines()) == len(hosts)   # each host asked once, no retries


def test_e2e_from_the_release_csvs(repo_root, shared_data, tmp_path):
    """--from DIR holding the E2E release CSVs (no Microsoft txt files): each split is converted to
    Microsoft's line format in the output folder, then formatted and encoded as usual."""
    dev = shared_data / "e2e" / "official" / "devset.csv"
    if not dev.is_file():
        pytest.skip(f"{dev} not found: the E2E release CSVs sit in ../shared/data/e2e/official in CI")
    header, *rows = dev.read_text(encoding="utf8").splitlines(keepends=True)   # one row per line
    valid_txt = (shared_data / "e2e" / "valid.txt").read_text(encoding="utf8").splitlines(keepends=True)
    src, out = tmp_path / "release", tmp_path / "data"
    src.mkdir()
    slices = {"trainset.csv": (0, 40), "devset.csv": (40, 60), "testset_w_refs.csv": (60, 80)}
    for name, (a, b) in slices.items():   # three small CSVs cut from the devset
        (src / name).write_text(header + "".join(rows[a:b]), encoding="utf8")
    r = run(repo_root, "create_datasets.sh", "--from", src, "--out", out, "--tasks", "e2e",
            "--vocab", shared_data / "vocab")
    assert r.returncode == 0, r.stderr
    assert "differs from the E2E release's devset.csv" in r.stderr   # a cut copy, not the release
    built = sorted(p.name for p in (out / "e2e").iterdir())
    assert built == sorted(f"{s}{x}" for s in ("train", "valid", "test")
                           for x in (".txt", "_formatted.jsonl", ".jsonl"))
    enc = encoder.get_encoder(str(shared_data / "vocab"))
    for split, name in (("train", "trainset.csv"), ("valid", "devset.csv"), ("test", "testset_w_refs.csv")):
        a, b = slices[name]
        # the devset rows come back as Microsoft's valid.txt has them
        assert (out / "e2e" / f"{split}.txt").read_text(encoding="utf8") == "".join(valid_txt[a:b])
        formatted, ids = tmp_path / f"{split}_f.jsonl", tmp_path / f"{split}.jsonl"
        format_converting_e2e.convert(str(out / "e2e" / f"{split}.txt"), str(formatted))
        gpt2_encode.encode_file(enc, str(formatted), str(ids), True, True, progress=False)
        assert (out / "e2e" / f"{split}_formatted.jsonl").read_bytes() == formatted.read_bytes()
        assert (out / "e2e" / f"{split}.jsonl").read_bytes() == ids.read_bytes()

    # Microsoft's own file wins over the CSV; a split with neither is listed as missing
    (src / "e2e").mkdir()
    (src / "e2e" / "valid.txt").write_text("name : A||A is here . \n", encoding="utf8")
    (src / "testset_w_refs.csv").unlink()
    r = run(repo_root, "create_datasets.sh", "--from", src, "--out", tmp_path / "d2", "--tasks", "e2e",
            "--vocab", shared_data / "vocab")
    assert r.returncode == 0, r.stderr
    assert "converting" in r.stdout and "devset.csv" not in r.stdout.split("not in")[0]
    assert (tmp_path / "d2" / "e2e" / "valid_formatted.jsonl").read_text() == \
        '{"context": "name : A", "completion": "A is here ."}\n'
    assert "e2e/test.txt (or the release's testset_w_refs.csv)" in r.stdout.split("not in")[1]

    # a CSV that cannot be converted fails the run, naming the file and where
    (src / "trainset.csv").write_text("mr,text\n" + rows[0], encoding="utf8")
    r = run(repo_root, "create_datasets.sh", "--from", src, "--out", tmp_path / "d3", "--tasks", "e2e",
            "--vocab", shared_data / "vocab")
    assert r.returncode == 1
    assert f"{src / 'trainset.csv'}:1: no column ref" in r.stderr
    assert f"convert {src / 'trainset.csv'}" in r.stderr.split("FAILED:")[1]
    assert not (tmp_path / "d3" / "e2e" / "train.txt").exists()
    assert not (tmp_path / "d3" / "e2e" / "train.jsonl").exists()
