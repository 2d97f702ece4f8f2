"""`python -m nlg.report`: finished runs -> paper tables (NLG/src/report.py, run_records.py,
published.py). Run folders are written by the pipelines' own writers (finetune._finish,
traincore.save_resume, eval/score.py, run_glue.py, MetaMathQA's generate.report), or by a real
smoke run of run_task.sh."""
import csv
import io
import json
import os
import re
import statistics
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import loralib as lora
from nlg import report
from nlg.published import PUBLISHED, readme_tables

ROOT = Path(__file__).resolve().parents[1]
CARD = {"vocab_size": 64, "n_positions": 32, "n_ctx": 32, "n_embd": 16, "n_layer": 1, "n_head": 2}
LORA = dict(method="lora", r=2, alpha=4, pipeline="gpt2")

E2E_REFS = ["the wrestlers is a cheap pub in the city centre",
            "aromi is a coffee shop near the river with a high rating",
            "the punter serves fast food at a low price"]
E2E_HYPS = {  # one hypothesis file per seed: different BLEU, NIST, ...
    1: ["the wrestlers is a cheap pub in the centre", "aromi is a coffee shop near the river",
        "the punter serves cheap fast food"],
    2: ["the wrestlers is a pub in the city centre", "aromi is a shop with a high rating",
        "the punter serves fast food at a low price"],
    3: ["a cheap pub", "aromi is a coffee shop", "fast food"]}


# -- run folders written by the pipelines' own code ----------------------------------------------

def gpt2_run(d, seed, method=LORA, lr=2e-4, model_card="gpt2.md"):
    """A finished gpt2_ft.py run: resume.pt (its settings) and the final checkpoint with
    run_info.json, as finetune.py writes them at the last step. The network is a tiny GPT-2;
    run_info records `model_card` (the card a real run of the papers' rows names)."""
    from nlg import finetune
    from nlg.model import GPT2LMModel, config_from_card
    from traincore import save_resume
    d.mkdir(parents=True)
    card = d / "card.json"
    card.write_text(json.dumps(CARD))
    cfg = lora.MethodConfig(**method)
    torch.manual_seed(seed)
    model = GPT2LMModel(config_from_card(str(card), method=cfg))
    full = not cfg.is_adapter
    if not full:
        lora.mark_only_lora_as_trainable(model)
    args = SimpleNamespace(work_dir=str(d), max_step=4, rank=0, export_published=None,
                           model_card=model_card, world_size=1, random_seed=seed, lr=lr,
                           train_batch_size=8, method_config=cfg)
    sd = model.state_dict()
    trained = list(sd) if full else [k for k in sd if lora.is_adapter_key(k)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_resume(str(d / "resume.pt"), model, trained, opt, sched, None, 4,
                finetune.resume_settings(args), torch.device("cpu"))
    trainable, total = lora.count_parameters(model)
    finetune._finish(args, cfg, model, 4, dict(trainable=trainable, total=total, train_time=1.0,
                                               train_cpu=2.0 + seed, peak_mem=100.0,
                                               resume_path=None))
    write_stamp(d, "beam", ["--data", "/data/test.jsonl", "--beam", "10", "--length_penalty", "0.9",
                            "--work_dir", str(d), "--output_file", "predict.4.b10p09r4.jsonl"])
    (d / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 5.0 - s / seed})
                                               + "\n" for s in (1, 2, 3, 4)))
    return d


def write_stamp(d, stage, lines):
    """run_task.sh's stamp of a stage: its arguments one per line, then 'FILE SIZE MTIME'."""
    (d / f".stamp.{stage}").write_text("\n".join(lines) + "\n/data/test.jsonl 1234 1700000000\n")


def score_e2e(d, hyps, meteor=None):
    """eval/score.py --task e2e --no-meteor on a small reference / hypothesis pair; `meteor`
    (value, note) rewrites scores.json with score.py's own writer as a run with Java would."""
    import score as score_step
    ref, hyp = d / "e2e_ref.txt", d / "e2e_pred.txt"
    ref.write_text("".join(f"{r}\n{r} indeed\n\n" for r in E2E_REFS))
    hyp.write_text("".join(h + "\n" for h in hyps))
    assert score_step.main(["--task", "e2e", "--ref", str(ref), "--hyp", str(hyp),
                            "--json", str(d / "scores.json"), "--no-meteor"]) == 0
    if meteor is not None:
        scores = {k: v for k, v in json.loads((d / "scores.json").read_text()).items()
                  if k not in ("unavailable", "scorer")}
        scores["METEOR"] = meteor[0]
        score_step._write_json(d / "scores.json", scores, {"METEOR": meteor[1]}, "builtin")
    write_stamp(d, "score", ["e2e", "/vocab", "6", "1" if meteor is None else ""])
    return json.loads((d / "scores.json").read_text())


def score_gen(d, task, splits, hyps):
    """run_task.sh's WebNLG / DART score step: eval_<split>/scores.json per split, by score.py."""
    import score as score_step
    out = {}
    for split in splits:
        e = d / f"eval_{split}"
        (e / "references").mkdir(parents=True)
        for i in range(2):
            (e / "references" / f"reference{i}").write_text("".join(f"{r} {i}\n" for r in E2E_REFS))
        (e / "hypothesis").write_text("".join(h + "\n" for h in hyps))
        assert score_step.main(["--task", task, "--ref", str(e / "references" / "reference"),
                                "--hyp", str(e / "hypothesis"), "--nr", "2",
                                "--json", str(e / "scores.json"), "--no-meteor"]) == 0
        out[split] = json.loads((e / "scores.json").read_text())
    write_stamp(d, "score", [task, "/vocab", "2", "1"])
    return out


def run_report(*argv):
    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        rc = report.main([str(a) for a in argv])
    finally:
        sys.stdout = old
    return rc, out.getvalue()


def md_tables(text):
    """{table title: [ {column: cell} ]} of a report's markdown."""
    tables, title, head = {}, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            title, head = line[3:], None
        elif line.startswith("|") and title is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if head is None:
                head = cells
            elif not line.startswith("|---"):
                tables.setdefault(title, []).append(dict(zip(head, cells)))
    return tables


# -- grouping, statistics, folder names ----------------------------------------------------------

def test_seeds_of_one_setting_make_one_row_with_mean_and_sample_std(tmp_path):
    # folder names that lie: a LoRA run in "nola_seed1", another in "full_ft"
    a = gpt2_run(tmp_path / "nola_seed1", seed=1)
    b = gpt2_run(tmp_path / "full_ft", seed=2)
    c = gpt2_run(tmp_path / "lora_other_lr", seed=1, lr=1e-3)     # other settings: its own row
    sa, sb = score_e2e(a, E2E_HYPS[1]), score_e2e(b, E2E_HYPS[2])
    score_e2e(c, E2E_HYPS[3])
    # a folder named twice (itself and its parent) is one run
    rc, text = run_report(tmp_path, a, "--out", tmp_path / "r", "--published", "none")
    assert rc == 0, text
    rows = md_tables(text)["E2E"]
    assert [r["method"] for r in rows] == ["LoRA", "LoRA"]
    two = next(r for r in rows if r["seeds"] == "1, 2")
    assert two["settings"] == "lr=0.0002" and rows[1]["settings"] == "lr=0.001"
    bleu = [100 * sa["BLEU"], 100 * sb["BLEU"]]
    assert bleu[0] != bleu[1]
    assert two["BLEU"] == f"{statistics.mean(bleu):.2f} ± {statistics.stdev(bleu):.2f}"
    nist = [sa["NIST"], sb["NIST"]]
    assert two["NIST"] == f"{statistics.mean(nist):.3f} ± {statistics.stdev(nist):.3f}"
    info = json.loads((a / "run_info.json").read_text())
    assert two["trainable params"] == f"{info['trainable_params']:,}"
    # the adapter's own tensors (lora_A, lora_B of the one layer), not the whole checkpoint
    ckpt = torch.load(info["final_checkpoint"], weights_only=True)["model_state_dict"]
    nbytes = sum(v.numel() * v.element_size() for k, v in ckpt.items() if "lora_" in k)
    assert two["adapter size"] == report.human_bytes(nbytes) and nbytes == 4 * info["trainable_params"]
    cpu = [3.0, 4.0]     # train_cpu_s of the two runs
    assert two["train CPU time"] == f"{statistics.mean(cpu):.1f} s ± {statistics.stdev(cpu):.1f} s"
    assert "METEOR (no column): switched off (--no-meteor) in every run" in text
    with open(tmp_path / "r.csv", newline="") as f:
        csv_rows = [r for r in csv.DictReader(f) if r["seeds"] == "1, 2" and r["column"] == "BLEU"]
    assert float(csv_rows[0]["mean"]) == pytest.approx(statistics.mean(bleu), abs=1e-12)
    assert float(csv_rows[0]["std"]) == pytest.approx(statistics.stdev(bleu), abs=1e-12)
    assert csv_rows[0]["n"] == "2"


def test_method_record_not_folder_decides_the_row(tmp_path):
    nola = dict(method="nola", r=2, alpha=1, pipeline="gpt2", options={"num_basis_A": 4, "num_basis_B": 4})
    score_e2e(gpt2_run(tmp_path / "lora", seed=1, method=nola), E2E_HYPS[1])
    score_e2e(gpt2_run(tmp_path / "nola", seed=1, method=dict(method="full")), E2E_HYPS[2])
    preset = dict(method="lorma_plus", r=2, alpha=4, pipeline="gpt2")
    family = dict(method="lorma", r=2, alpha=4, pipeline="gpt2", options={"kind": "rri"})
    score_e2e(gpt2_run(tmp_path / "x", seed=1, method=preset), E2E_HYPS[1])
    score_e2e(gpt2_run(tmp_path / "y", seed=2, method=family), E2E_HYPS[2])
    rc, text = run_report(tmp_path, "--published", "none")
    rows = {r["method"]: r for r in md_tables(text)["E2E"]}
    assert set(rows) == {"NOLA", "full fine-tuning", "LoRMA_+"}
    # --method lorma_plus and --method lorma --lorma_type rri are one method: one row, two seeds
    assert rows["LoRMA_+"]["seeds"] == "1, 2"


# -- every metric of each task -------------------------------------------------------------------

def test_webnlg_splits_and_dart_metrics(tmp_path):
    web = gpt2_run(tmp_path / "w", seed=1)
    ws = score_gen(web, "webnlg", ("all", "seen", "unseen"), E2E_HYPS[1])
    dart = gpt2_run(tmp_path / "d", seed=1)
    ds = score_gen(dart, "dart", ("all",), E2E_HYPS[2])
    rc, text = run_report(tmp_path, "--published", "none")
    tables = md_tables(text)
    assert list(tables) == ["WebNLG 2017", "WebNLG 2017 (seen)", "WebNLG 2017 (unseen)", "DART"]
    for title, split in (("WebNLG 2017", "all"), ("WebNLG 2017 (seen)", "seen"),
                         ("WebNLG 2017 (unseen)", "unseen")):
        (row,) = tables[title]
        assert row["BLEU"] == f"{ws[split]['BLEU']:.2f}"
        assert row["TER"] == f"{ws[split]['TER']:.3f}" and row["chrF++"] == f"{ws[split]['chrF++']:.3f}"
    (row,) = tables["DART"]
    assert (row["BLEU"], row["TER"], row["chrF++"]) == (
        f"{ds['all']['BLEU']:.2f}", f"{ds['all']['TER']:.3f}", f"{ds['all']['chrF++']:.3f}")
    assert "METEOR" not in row and "METEOR (no column): switched off (--no-meteor) in every run" in text


def test_a_run_missing_a_score_is_named(tmp_path):
    a = gpt2_run(tmp_path / "a", seed=1)
    b = gpt2_run(tmp_path / "b", seed=2)
    c = gpt2_run(tmp_path / "c", seed=3)
    sa = score_e2e(a, E2E_HYPS[1], meteor=(0.41, None))
    score_e2e(b, E2E_HYPS[2], meteor=(None, "java not found on PATH (METEOR 1.5 is a Java program)"))
    write_stamp(c, "score", ["e2e", "/vocab", "6", ""])     # trained, never scored
    stopped = tmp_path / "stopped"          # killed mid-training: a resumable state, no record
    stopped.mkdir()
    (stopped / "resume.pt").write_bytes((a / "resume.pt").read_bytes())
    rc, text = run_report(tmp_path, "--published", "none")
    assert rc == 0
    (row,) = md_tables(text)["E2E"]
    assert row["seeds"] == "1, 2, 3"
    assert row["METEOR"] == f"{100 * 0.41:.2f} (1 of 3)"
    assert row["BLEU"].endswith("(2 of 3)") and f"{100 * sa['BLEU']:.2f}" not in row["BLEU"]
    assert f"METEOR: Java missing (java not found on PATH (METEOR 1.5 is a Java program)) in {b}" in text
    assert f"no scores: {c}: not scored: no {c / 'scores.json'} (decode + score did not run)" in text
    assert f"{stopped}: unfinished (resume.pt, no run record yet): not in the tables" in text
    # switched off is not blamed on Java
    assert "switched off" not in text


# -- markdown and CSV; the published rows ---------------------------------------------------------

def test_markdown_and_csv_hold_the_same_cells_with_published_rows_beside_ours(tmp_path):
    for seed in (1, 2):
        score_e2e(gpt2_run(tmp_path / f"l{seed}", seed=seed), E2E_HYPS[seed])
    score_e2e(gpt2_run(tmp_path / "ft", seed=1, method=dict(method="full")), E2E_HYPS[3])
    score_e2e(gpt2_run(tmp_path / "large", seed=1, model_card="gpt2.lg"), E2E_HYPS[3])
    rc, text = run_report(tmp_path, "--out", tmp_path / "r")
    assert rc == 0
    assert text.startswith((tmp_path / "r.md").read_text())
    md = md_tables(text)
    rows = md["E2E"]
    # our GPT-2 M LoRA, GPT-2 M FT and GPT-2 L LoRA rows bring the paper's same three rows
    published = {(r["method"], r["model"]): r for r in rows if r["method"].endswith("(published)")}
    assert set(published) == {("LoRA (published)", "GPT-2 M"), ("FT* (published)", "GPT-2 M"),
                              ("LoRA (published)", "GPT-2 L")}
    paper = next(p for p in PUBLISHED if p.task == "e2e" and p.model_card == "gpt2.md"
                 and p.method == "lora")
    assert published[("LoRA (published)", "GPT-2 M")]["BLEU"] == dict(paper.values)["BLEU"] == "70.4±.1"
    assert published[("LoRA (published)", "GPT-2 M")]["trainable params"] == "0.35M"
    assert "published rows: LoRA paper (arXiv 2106.09685 v2), Table 3" in text
    # every markdown cell is one CSV line (and no other), with the numbers it shows
    with open(tmp_path / "r.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    from_csv = {(r["table"], r["method"], r["model"], r["settings"], r["column"]): r for r in lines}
    assert len(from_csv) == len(lines)
    from_md = {}
    for title, trs in md.items():
        for r in trs:
            for col, cell in r.items():
                if col not in ("method", "model", "settings", "seeds"):
                    from_md[(title, r["method"], r.get("model", ""), r.get("settings", ""), col)] = cell
    assert set(from_md) == set(from_csv)
    cols = {c.label: c for c in report.EFFICIENCY + report.E2E}
    for key, cell in from_md.items():
        line = from_csv[key]
        assert line["cell"] == cell
        if line["source"] == "ours" and int(line["n"]) > 0:
            mean = float(line["mean"])
            std = float(line["std"]) if line["std"] else None
            assert report.cell_text(mean, std, int(line["n"]), int(line["runs"]), cols[key[-1]]) == cell
    assert {r["source"] for r in lines} == {"ours", "published: " + paper.source}
    # --published none: ours alone
    rc, text = run_report(tmp_path, "--published", "none")
    assert "(published)" not in text


def test_readme_published_tables_are_this_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, table in readme_tables().items():
        assert table in readme, f"README's published {name} table differs from nlg/published.py"


# -- RoBERTa (GLUE) and the LLM pipeline -----------------------------------------------------------

@pytest.mark.slow
def test_glue_runs_report_every_metric_of_their_task(tmp_path, shared_data):
    from nlu import run_glue
    res = []
    for seed in (1, 2):
        out = tmp_path / f"mrpc_{seed}"
        run_glue.main(["--task_name", "mrpc", "--model_card", "roberta-tiny", "--random_init",
                       "--data_dir", str(shared_data / "glue"), "--tokenizer_dir", str(shared_data / "vocab"),
                       "--output_dir", str(out), "--max_steps", "2", "--max_train_samples", "16",
                       "--max_eval_samples", "16", "--max_seq_length", "48", "--seed", str(seed),
                       "--method", "lora", "--lora_dim", "2", "--lora_alpha", "4",
                       "--evaluation_strategy", "epoch", "--num_train_epochs", "2",
                       "--no_tensorboard", "--do_train", "--do_eval"])
        res.append(json.loads((out / "eval_results.json").read_text())["best"])
    rc, text = run_report(tmp_path)
    (row,) = md_tables(text)["GLUE MRPC"]
    assert row["seeds"] == "1, 2"
    for key, label in (("accuracy", "accuracy"), ("f1", "F1"), ("acc_and_f1", "(acc + F1) / 2")):
        vals = [100 * r[key] for r in res]
        assert row[label] == f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"
    assert "best epoch" in text
    # run_glue.py records the trainable count (run_config.json): the adapter and the head
    assert "trainable parameters not recorded" not in text
    sd = torch.load(tmp_path / "mrpc_1" / "pytorch_model.bin", weights_only=True)
    assert row["trainable params"] == f"{sum(v.numel() for v in sd.values()):,}"
    assert row["adapter size"] == report.human_bytes(sum(v.numel() * v.element_size() for v in sd.values()))


def test_llm_runs_gsm8k_math_and_mmlu(tmp_path):
    from generate import report as write_results
    method = lora.MethodConfig(method="lorma", r=8, alpha=16, pipeline="llm").to_dict()
    answers = {1: [True, True, False, False], 2: [True, True, True, False]}
    for seed, ok in answers.items():
        d = tmp_path / f"math_{seed}"
        (d / "adapter").mkdir(parents=True)
        lora_file = d / "adapter" / "adapter_model.bin"
        torch.save({"a.lorma_A": torch.zeros(8, 16), "a.lorma_B": torch.zeros(16, 8)}, lora_file)
        # train_math_lorma.py's run_info.json
        (d / "run_info.json").write_text(json.dumps(
            {"method": method, "trainable_params": 256, "total_params": 10_000, "examples": 10,
             "steps": 2, "args": {"model_name_or_path": "tiny-llama", "seed": seed,
                                  "learning_rate": 5e-4, "output_dir": str(d), "lorma_r": 8}}))
        args = SimpleNamespace(model=str(d), results=None, data_file="gsm8k.jsonl", start=0, end=4)
        write_results("gsm8k", "gsm8k ", ok, [], args)
        # mmlu_results.json as docs the report's MMLU keys (see /work/notes/report.md)
        (d / "mmlu_results.json").write_text(json.dumps(
            {"task": "mmlu", "accuracy": 0.25 * seed, "accuracy_questions": 0.2 * seed,
             "correct": seed, "total": 5, "split": "val", "shots": 0,
             "subjects": {"anatomy": {"accuracy": 0.5 * seed, "correct": seed, "total": 2}}}))
    rc, text = run_report(tmp_path)
    tables = md_tables(text)
    (g,) = tables["GSM8K"]
    acc = [100 * sum(v) / len(v) for v in answers.values()]
    assert g["accuracy"] == f"{statistics.mean(acc):.2f} ± {statistics.stdev(acc):.2f}"
    assert g["method"] == "LoRMA_+" and g["trainable params"] == "256"
    assert g["adapter size"] == report.human_bytes(2 * 8 * 16 * 4)
    (m,) = tables["MMLU"]
    assert m["accuracy (mean over subjects)"] == f"{37.5:.2f} ± {statistics.stdev([25, 50]):.2f}"
    assert tables["MMLU per subject (accuracy x 100)"] == [{"subject": "anatomy", "LoRMA_+": "75.00 ± 35.36"}]
    # math_results.json was never written: the MATH table names both runs
    assert "accuracy" not in tables["MATH"][0]
    for seed in answers:
        assert f"no scores: {tmp_path / f'math_{seed}'}: not evaluated: no" in text


# -- bad input -----------------------------------------------------------------------------------

def test_bad_input_is_named(tmp_path, capsys):
    rc, _ = run_report(tmp_path / "nowhere")
    assert rc == 2 and "nowhere: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    rc, _ = run_report(tmp_path / "empty")
    assert rc == 2 and "no run folder in it" in capsys.readouterr().err
    d = gpt2_run(tmp_path / "a", seed=1)
    (d / "scores.json").write_text('{"BLEU": 0.5,\n oops}')
    rc, _ = run_report(d)
    assert rc == 2 and f"{d / 'scores.json'}:2: not valid JSON" in capsys.readouterr().err
    score_e2e(d, E2E_HYPS[1])
    rc, _ = run_report(d, "--label", f"x={tmp_path / 'empty'}")
    assert rc == 2 and "is not among the runs read" in capsys.readouterr().err
    rc, _ = run_report("--base", f"base={d}")
    assert rc == 2 and "it is a trained run, not a base model" in capsys.readouterr().err
    b = gpt2_run(tmp_path / "b", seed=2)
    score_e2e(b, E2E_HYPS[2])
    rc, _ = run_report(d, b, "--label", f"one={d}", "--label", f"two={b}")
    assert rc == 2 and "one row, one label" in capsys.readouterr().err


# -- a real run_task.sh run ------------------------------------------------------------------------

@pytest.mark.slow
def test_webnlg_smoke_run_reads_as_recorded(tmp_path):
    env = {**os.environ, "SMOKE_DIR": str(tmp_path / "smoke"), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "NLG" / "scripts" / "webnlg_lora.sh"), "--smoke", "--seed", "7",
                        "--work_dir", str(tmp_path / "runs" / "anything")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rc, text = run_report(tmp_path / "runs", "--out", tmp_path / "r")
    tables = md_tables(text)
    assert list(tables) == ["WebNLG 2017", "WebNLG 2017 (seen)", "WebNLG 2017 (unseen)"]
    run = tmp_path / "runs" / "anything"
    info = json.loads((run / "run_info.json").read_text())
    for title, split in (("WebNLG 2017", "all"), ("WebNLG 2017 (seen)", "seen"), ("WebNLG 2017 (unseen)", "unseen")):
        (row,) = tables[title]
        s = json.loads((run / f"eval_{split}" / "scores.json").read_text())
        assert (row["method"], row["trainable params"]) == ("LoRA", f"{info['trainable_params']:,}")
        assert row["BLEU"] == f"{s['BLEU']:.2f}" and row["TER"] == f"{s['TER']:.3f}"
    assert "one run per row (seed 7)" in text and "What the runs do not record" not in text
    from nlg.run_records import read_run
    rec = read_run(str(run))
    assert rec.seed == 7 and rec.settings["lr"] == 2e-4
    test_file = tmp_path / "smoke" / "data" / "webnlg_challenge_2017" / "test.jsonl"
    decode = rec.results[0].settings
    assert decode == {"data": str(test_file), "seq_len": 96, "eval_len": 24, "beam": 2,
                      "length_penalty": 0.8, "no_repeat_ngram_size": 4, "repetition_penalty": 1.0,
                      "eos_token_id": decode["eos_token_id"], "ref_num": 3}
    pytest.importorskip("matplotlib")
    head = (tmp_path / "r.png").read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 100 and height > 100
    assert re.search(r"^loss curves: ", text, re.M)
