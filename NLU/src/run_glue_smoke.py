"""The data of the NLU smoke runs (`bash NLU/scripts/<any roberta script>.sh --smoke`): small
splits of every GLUE task in the layout of download_glue_data.py (the files run_glue.py reads
for a real run) and a byte-level vocabulary for them, written offline from a seeded generator.

    python src/run_glue_smoke.py OUT_DIR      # OUT_DIR/glue/<CoLA, SST-2, ...>, OUT_DIR/tokenizer

Labels follow simple rules of the sentences (a praised or panned film, a pair that says the same
thing or not), so that a tiny model can learn a little of them in a few steps; the numbers mean
nothing beyond "the pipeline runs".
"""
if not __package__:  # run as a file (python src/run_glue_smoke.py), as run_glue.py
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlu")
import argparse
import os
import random

from nlg.byte_vocab import write_byte_vocab
from nlu.glue_data import TASKS
from traincore.cli import setup_parser, run

SUBJECTS = ("the cat", "a dog", "my friend", "the teacher", "our team", "the bird", "her aunt")
VERBS = ("likes", "sees", "finds", "helps", "wants", "paints")
OBJECTS = ("the ball", "a book", "the garden", "some music", "the river", "a letter")
GOOD = ("good", "great", "lovely", "wonderful")
BAD = ("bad", "awful", "boring", "dull")
SYNONYM = {"likes": "enjoys", "sees": "watches", "finds": "discovers", "helps": "assists",
           "wants": "desires", "paints": "draws"}
N_TRAIN, N_DEV = 64, 16


def _clause(r):
    return r.choice(SUBJECTS), r.choice(VERBS), r.choice(OBJECTS)


def _pair(r):
    """(sentence 1, sentence 2, same meaning?): a paraphrase (a synonym) or another clause."""
    s, v, o = _clause(r)
    if r.random() < 0.5:
        return f"{s} {v} {o} .", f"{s} {SYNONYM[v]} {o} .", True
    s2, v2, o2 = _clause(r)
    while (s2, v2, o2) == (s, v, o):
        s2, v2, o2 = _clause(r)
    return f"{s} {v} {o} .", f"{s2} {v2} {o2} .", False


def _rows(task, r, n):
    """Data lines (fields) of `task`, the header excluded."""
    out = []
    for i in range(n):
        if task == "cola":
            words = " ".join(_clause(r)).split()
            ok = r.random() < 0.5
            if not ok:
                r.shuffle(words)
            out.append(["smoke", str(int(ok)), "", " ".join(words) + " ."])
        elif task == "sst2":
            ok = r.random() < 0.5
            out.append([f"the film was {r.choice(GOOD if ok else BAD)} .", str(int(ok))])
        else:
            a, b, same = _pair(r)
            if task == "mrpc":
                out.append([str(int(same)), str(2 * i), str(2 * i + 1), a, b])
            elif task == "stsb":
                score = 4.5 if same else round(r.uniform(0, 2), 2)
                out.append([str(i), "smoke", "smoke", "2024", str(i), "", "", a, b, str(score)])
            elif task in ("rte", "qnli"):
                q = f"does {b[:-2]} ?" if task == "qnli" else b
                out.append([str(i), q, a, "entailment" if same else "not_entailment"])
            elif task == "qqp":
                out.append([str(i), str(2 * i), str(2 * i + 1), f"why {a[:-2]} ?",
                            f"why {b[:-2]} ?", str(int(same))])
            elif task == "mnli":
                label = "entailment" if same else r.choice(("contradiction", "neutral"))
                out.append([str(i), str(i), f"{i}e", "smoke", "", "", "", "", a, b, label, label])
    return out


HEADERS = {
    "sst2": ["sentence", "label"],
    "mrpc": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    "stsb": ["index", "genre", "filename", "year", "old_index", "source1", "source2",
             "sentence1", "sentence2", "score"],
    "rte": ["index", "sentence1", "sentence2", "label"],
    "qnli": ["index", "question", "sentence", "label"],
    "qqp": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    "mnli": ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
             "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
             "sentence2", "label1", "gold_label"],
}


def _write_tsv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        for fields in ([header] if header else []) + rows:
            f.write("\t".join(fields) + "\n")


def write_smoke_data(out_dir, seed=0):
    """OUT_DIR/glue/<task folder>/{train, dev}.tsv for every task (MNLI: dev_matched and
    dev_mismatched) and OUT_DIR/tokenizer (encoder.json + vocab.bpe, RoBERTa's special ids)."""
    for name, spec in TASKS.items():
        r = random.Random(f"{seed}-{name}")
        folder = os.path.join(out_dir, "glue", spec.folder)
        os.makedirs(folder, exist_ok=True)
        header = HEADERS.get(name) if spec.header else None
        _write_tsv(os.path.join(folder, "train.tsv"), header, _rows(name, r, N_TRAIN))
        for dev in spec.dev_files:
            _write_tsv(os.path.join(folder, dev), header, _rows(name, r, N_DEV))
    write_byte_vocab(os.path.join(out_dir, "tokenizer"), ("<s>", "<pad>", "</s>", "<unk>"),
                     specials_first=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder to write glue/ and tokenizer/ into")
    p.add_argument("--seed", type=int, default=0)
    setup_parser(p)
    args = p.parse_args(argv)
    write_smoke_data(args.out_dir, args.seed)
    print(f"smoke data: {os.path.join(args.out_dir, 'glue')} (every GLUE task, {N_TRAIN} train "
          f"/ {N_DEV} dev lines), vocabulary {os.path.join(args.out_dir, 'tokenizer')}")


if __name__ == "__main__":
    run("run_glue_smoke.py", main)
