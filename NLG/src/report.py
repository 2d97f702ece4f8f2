"""Finished runs -> the tables papers print: per task and method, every metric the official
scorers report, mean ± std over seeds, trainable parameters and adapter size, with the
published rows beside them.

    python -m nlg.report RUN_DIR [RUN_DIR ...] [--out PREFIX] [--out_md F] [--out_csv F]
        [--out_png F] [--published matching|all|none] [--base LABEL=DIR] [--label LABEL=DIR]
        [--title TEXT] [--note TEXT]

A RUN_DIR is a run folder or any folder above run folders (all are found). What each pipeline
records and what is read from it: nlg/run_records.py. Runs are grouped by what they record
(task, method record, model, training settings, decoding / evaluation settings), never by
folder name; each group is one row, its cells the mean ± sample std over its runs (seeds). A
run that lacks a score is named under its table, and a cell averaged over fewer runs than its
row has says so ("(2 of 3)"). Tables: E2E; WebNLG all / seen / unseen; DART; each GLUE task with
its metrics (each run's best epoch where run_glue.py evaluated every epoch); GSM8K; MATH; MMLU
(and its subjects). Published rows (nlg/published.py) join a table where a row of ours has the
same task, model and method (--published all: every one).

Out: markdown (stdout, and --out_md), CSV (--out_csv: one line per table cell, mean / std / n
unrounded, in the unit the column shows) and a PNG of the training (and validation) loss curves
(--out_png; needs matplotlib). --out PREFIX writes PREFIX.md, PREFIX.csv and PREFIX.png.
"""
import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from nlg import published as pub
from nlg.run_records import Run, RunError, find_run_dirs, method_family, read_run
from nlg.tasks import TASKS as NLG_TASKS
from traincore import cli


@dataclass(frozen=True)
class Column:
    key: str            # the scorer's key, or a Run attribute (efficiency columns)
    label: str
    kind: str = "metric"    # metric | count | bytes | seconds | mb
    scale: float = 1.0      # shown value = recorded value * scale (the papers' scale)
    decimals: int = 2

    @property
    def unit(self):
        return {"count": "", "bytes": "bytes", "seconds": "s", "mb": "MB"}.get(
            self.kind, "x100" if self.scale == 100 else "")


EFFICIENCY = (Column("trainable_params", "trainable params", "count"),
              Column("adapter_bytes", "adapter size", "bytes"),
              Column("train_cpu_s", "train CPU time", "seconds", decimals=1),
              Column("peak_mem_mb", "peak memory", "mb", decimals=0))
# e2e-metrics gives BLEU, METEOR and ROUGE-L as fractions (papers print them x 100);
# GenerationEval gives BLEU in 0-100 and the others as fractions (papers print them so).
E2E = (Column("BLEU", "BLEU", scale=100), Column("NIST", "NIST", decimals=3),
       Column("METEOR", "METEOR", scale=100), Column("ROUGE_L", "ROUGE-L", scale=100),
       Column("CIDEr", "CIDEr", decimals=3))
GEN = (Column("BLEU", "BLEU"), Column("METEOR", "METEOR", decimals=3),
       Column("TER", "TER", decimals=3), Column("chrF++", "chrF++", decimals=3))
GLUE_LABELS = {"mcc": "MCC", "accuracy": "accuracy", "f1": "F1", "acc_and_f1": "(acc + F1) / 2",
               "pearson": "Pearson", "spearmanr": "Spearman", "corr": "(Pearson + Spearman) / 2"}
LLM = {"gsm8k": ("GSM8K", (Column("accuracy", "accuracy", scale=100),
                           Column("invalid", "invalid outputs", "count"))),
       "math": ("MATH", (Column("accuracy", "accuracy", scale=100),
                         Column("invalid", "invalid outputs", "count"))),
       "mmlu": ("MMLU", (Column("accuracy", "accuracy (mean over subjects)", scale=100),
                         Column("accuracy_questions", "accuracy (all questions)", scale=100)))}


def task_columns(task) -> Tuple[str, Tuple[Column, ...]]:
    """(title, metric columns) of a task."""
    if task in NLG_TASKS:
        return NLG_TASKS[task].title, (E2E if NLG_TASKS[task].references == "e2e" else GEN)
    if task in LLM:
        return LLM[task]
    if task == "unknown":
        return "unknown NLG task", GEN
    from nlu.glue_data import TASKS as GLUE
    spec = GLUE[task]
    stems = [os.path.splitext(f)[0] for f in spec.dev_files]
    if len(stems) > 1:      # MNLI: matched and mismatched
        cols = tuple(Column(f"{s}_{m}", f"{GLUE_LABELS[m]} ({s.split('_')[-1]})", scale=100)
                     for s in stems for m in spec.scores)
    else:
        cols = tuple(Column(m, GLUE_LABELS[m], scale=100) for m in spec.scores)
    return f"GLUE {spec.folder}", cols


def task_order(task):
    from nlu.glue_data import TASKS as GLUE
    order = list(NLG_TASKS) + list(GLUE) + list(LLM) + ["unknown"]
    return order.index(task) if task in order else len(order)


def method_title(method) -> str:
    """How papers name a method record (a method this table does not know: its own name)."""
    m = method_family(method)
    name, o = m.get("method"), m.get("options") or {}
    if name == "lora":
        return "LoRA"
    if name == "lorma":
        return {"rri": "LoRMA_+", "shift": "LoRMA_pi"}.get(o.get("kind"), f"LoRMA ({o.get('kind')})")
    if name == "mtlora":
        return f"MTLoRA ({o.get('structure')})"
    if name == "nola":
        return f"NOLA ({o['qbits']}-bit)" if o.get("qbits") else "NOLA"
    return {"full": "full fine-tuning", "none": "base model, no adapter",
            "unknown": "unknown method"}.get(name, str(name))


def model_title(model) -> str:
    if model in (None, "?"):
        return "-"
    if model in pub.GPT2_MODELS:
        return pub.GPT2_MODELS[model]
    if model.endswith(".json") and os.path.isfile(model):
        try:
            with open(model, encoding="utf-8") as f:
                card = json.load(f)
            return f"GPT-2 {card['n_layer']} x {card['n_embd']} ({os.path.basename(model)})"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return os.path.basename(model.rstrip("/")) if os.path.isabs(model) else model


def why_missing(reason: str) -> str:
    """A scorer's reason for a null metric, in words that say whose doing it was."""
    r = reason.lower()
    if "--no-meteor" in r:
        return "switched off (--no-meteor)"
    if r.startswith("java not found"):
        return f"Java missing ({reason})"
    if "meteor jar" in r or "meteor-1.5.jar" in r:
        return f"METEOR jar missing ({reason})"
    return reason


# -- grouping -----------------------------------------------------------------------------------

@dataclass
class Group:
    task: str
    split: str
    runs: List[Run] = field(default_factory=list)
    results: list = field(default_factory=list)   # each run's Result for this task / split
    label: Optional[str] = None

    @property
    def first(self):
        return self.runs[0]


def group_key(run, res):
    # A run without a training record records nothing to group by: it stands alone.
    alone = run.path if run.pipeline == "scores" else None
    return json.dumps([res.task, res.split, method_family(run.method), run.model, run.settings,
                       res.settings, alone], sort_keys=True, default=str)


def group_runs(runs: List[Run], labels: Dict[str, str]) -> List[Group]:
    groups: Dict[str, Group] = {}
    for run in runs:
        for res in run.results:
            g = groups.setdefault(group_key(run, res), Group(res.task, res.split))
            g.runs.append(run)
            g.results.append(res)
    for g in groups.values():
        named = {labels[r.path] for r in g.runs if r.path in labels}
        if len(named) > 1:
            raise RunError(f"labels {sorted(named)} were given to runs that record the same task, "
                           f"method and settings ({', '.join(r.path for r in g.runs)}): one row, "
                           f"one label")
        g.label = named.pop() if named else None
    return list(groups.values())


# -- cells --------------------------------------------------------------------------------------

def human_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0


def fmt(value, col: Column) -> str:
    if col.kind == "count":
        return f"{round(value):,}"
    if col.kind == "bytes":
        return human_bytes(value)
    if col.kind == "seconds":
        return f"{value:.{col.decimals}f} s"
    if col.kind == "mb":
        return f"{value:.{col.decimals}f} MB"
    return f"{value:.{col.decimals}f}"


def stats(values):
    """(mean, sample std or None, n) of the values that are there."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def cell_text(mean, std, n, n_runs, col: Column) -> str:
    if n == 0:
        return "-"
    text = fmt(mean, col)
    if std is not None and not (col.kind in ("count", "bytes") and std == 0):
        text += f" ± {fmt(std, col)}"
    if n < n_runs:
        text += f" ({n} of {n_runs})"
    return text


@dataclass
class Cell:
    text: str
    mean: Optional[float] = None
    std: Optional[float] = None
    n: Optional[int] = None


@dataclass
class Row:
    method: str
    model: str
    settings: str
    seeds: str
    source: str             # "ours" | "published: ..."
    runs: int
    cells: Dict[str, Cell]  # column label -> cell
    missing: Dict[str, str] = field(default_factory=dict)   # column label -> which runs, why


@dataclass
class Table:
    task: str
    split: str
    title: str
    columns: List[str]
    rows: List[Row]
    notes: List[str]


def _values(group, col):
    if col.kind != "metric" and col.key in ("trainable_params", "adapter_bytes", "train_cpu_s",
                                            "peak_mem_mb"):
        return [getattr(r, col.key) for r in group.runs]
    return [res.scores.get(col.key) for res in group.results]


def _our_row(group, cols):
    cells, missing = {}, {}
    n_runs = len(group.runs)
    for col in cols:
        vals = _values(group, col)
        scaled = [v * col.scale if v is not None else None for v in vals]
        mean, std, n = stats(scaled)
        cells[col.label] = Cell(cell_text(mean, std, n, n_runs, col), mean, std, n)
        if col.kind == "metric" and n < n_runs:
            why = {}
            for run, res, v in zip(group.runs, group.results, vals):
                if v is None:
                    reason = res.missing.get(col.key) or res.missing.get("*") or \
                        f"no {col.key} in {res.source}"
                    why.setdefault(why_missing(reason), []).append(run.path)
            missing[col.label] = why
    seeds = sorted((r.seed for r in group.runs), key=lambda s: (s is None, str(s).zfill(20)))
    return Row(group.label or method_title(group.first.method), model_title(group.first.model), "",
               ", ".join("?" if s is None else str(s) for s in seeds), "ours", n_runs, cells,
               missing)


def _published_rows(task, split, groups, mode, cols):
    if mode == "none":
        return []
    ours = {(g.first.model, method_family(g.first.method).get("method")) for g in groups}
    rows = []
    for p in pub.rows_for(task, split):
        if mode == "matching" and (p.model_card, p.method) not in ours:
            continue
        values = dict(p.values)
        cells = {}
        for col in cols:
            if col.key == "trainable_params" and p.params:
                cells[col.label] = Cell(p.params)
            elif col.key in values:
                mean, std = pub.parse_printed(values[col.key])
                cells[col.label] = Cell(values[col.key], mean, std)
            else:
                cells[col.label] = Cell("-")
        rows.append(Row(f"{p.printed_method} (published)", p.model, "", "",
                        f"published: {p.source}", 0, cells))
    return rows


def _flat_settings(group):
    out = {}
    m = method_family(group.first.method)
    for k, v in m.items():
        if k == "options":
            out.update({o: ov for o, ov in (v or {}).items()})
        elif k not in ("method", "pipeline"):
            out[k] = v
    out.update(group.first.settings)
    res = group.results[0]
    out.update({f"eval:{k}": v for k, v in res.settings.items()})
    return out


def _show(v):
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


def _settings_text(groups, rows):
    """Each row's settings that tell it apart from rows of the same method and model."""
    flat = [_flat_settings(g) for g in groups]
    for i, row in enumerate(rows):
        peers = [j for j, r in enumerate(rows) if (r.method, r.model) == (row.method, row.model)]
        if len(peers) < 2:
            continue
        keys = sorted({k for j in peers for k in flat[j]}
                      - {k for k in flat[i] if all(flat[j].get(k, object()) == flat[i][k]
                                                    for j in peers)})
        row.settings = " ".join(f"{k}={_show(flat[i].get(k, '-'))}" for k in keys)


def build_tables(runs: List[Run], labels=None, published="matching") -> List[Table]:
    groups = group_runs(runs, labels or {})
    tables = []
    keys = sorted({(g.task, g.split) for g in groups},
                  key=lambda ts: (task_order(ts[0]), _split_order(ts[0], ts[1])))
    for task, split in keys:
        mine = [g for g in groups if (g.task, g.split) == (task, split)]
        title, metric_cols = task_columns(task)
        if split not in ("all", "dev"):
            title = f"{title} ({split})"
        cols = list(EFFICIENCY) + list(metric_cols)
        rows = [_our_row(g, cols) for g in mine]
        _settings_text(mine, rows)
        pub_rows = _published_rows(task, split, mine, published, cols)
        notes = _notes(mine, rows, pub_rows, cols)
        # A column nobody has a value in is left out (its note says why).
        shown = [c for c in cols if any(r.cells[c.label].text != "-" for r in rows + pub_rows)]
        models = {r.model for r in rows + pub_rows} - {"-"}
        head = ["method"] + (["model"] if len(models) > 1 else []) \
            + (["settings"] if any(r.settings for r in rows) else []) \
            + (["seeds"] if any(r.runs > 1 for r in rows) else []) + [c.label for c in shown]
        tables.append(Table(task, split, title, head, rows + pub_rows, notes))
    return tables


def _split_order(task, split):
    splits = NLG_TASKS[task].score_splits if task in NLG_TASKS else ()
    return splits.index(split) if split in splits else 0


def _notes(groups, rows, pub_rows, cols):
    notes = []
    for col in cols:
        if col.kind != "metric":
            continue
        why = {}
        for row in rows:
            for reason, paths in row.missing.get(col.label, {}).items():
                why.setdefault(reason, []).extend(paths)
        everyone = all(row.cells[col.label].n == 0 for row in rows)
        for reason, paths in why.items():
            if reason.startswith("not scored") or reason.startswith("not evaluated"):
                continue        # a whole run without scores: named once, below
            where = "every run" if everyone and len(why) == 1 else ", ".join(paths)
            gone = " (no column)" if everyone and not any(
                r.cells[col.label].text != "-" for r in pub_rows) else ""
            notes.append(f"{col.label}{gone}: {reason} in {where}")
    unscored = {}
    for g in groups:
        for run, res in zip(g.runs, g.results):
            if "*" in res.missing:
                unscored[run.path] = res.missing["*"]
    notes += [f"no scores: {path}: {why}" for path, why in unscored.items()]
    if rows and all(r.runs == 1 for r in rows):
        seeds = {r.seeds for r in rows} - {"?"}
        notes.append("one run per row" + (f" (seed {seeds.pop()})" if len(seeds) == 1 else ""))
    elif rows:
        notes.append("cells: mean ± sample standard deviation over the row's runs (seeds)")
    repeated = [r for r in rows if len(r.seeds.split(", ")) != len(set(r.seeds.split(", ")))]
    if repeated:
        notes.append("the same seed recorded by several runs of one row: "
                     + "; ".join(f"{r.method}: seeds {r.seeds}" for r in repeated))
    if any(res.settings.get("epoch") == "best" for g in groups for res in g.results):
        notes.append("GLUE: each run's best epoch (run_glue.py --evaluation_strategy epoch), as "
                     "the papers report")
    if any(g.first.pipeline == "roberta" for g in groups):
        notes.append("adapter size: the adapter and the classifier head (what run_glue.py saves)")
    notes += sorted({f"published rows: {r.source[len('published: '):]}" for r in pub_rows})
    return notes


# -- output -------------------------------------------------------------------------------------

def _cell_of(row, col):
    fixed = {"method": row.method, "model": row.model, "settings": row.settings, "seeds": row.seeds}
    return fixed[col] if col in fixed else row.cells[col].text


def markdown(tables: List[Table], title=None, notes=(), problems=()) -> str:
    out = [f"{title}\n"] if title else []
    for t in tables:
        out.append(f"## {t.title}\n")
        lines = ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
        lines += ["| " + " | ".join(_cell_of(r, c) for c in t.columns) + " |" for r in t.rows]
        out.append("\n".join(lines) + "\n")
        if t.notes:
            out.append("\n".join(f"- {n}" for n in t.notes) + "\n")
    if problems:
        out.append("## What the runs do not record\n")
        out.append("\n".join(f"- {p}" for p in problems) + "\n")
    out += [f"{n}\n" for n in notes]
    return "\n".join(out)


CSV_FIELDS = ("table", "task", "split", "source", "method", "model", "settings", "seeds", "runs",
              "column", "unit", "mean", "std", "n", "cell")


def csv_text(tables: List[Table]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for t in tables:
        cols = {c.label: c for c in list(EFFICIENCY) + list(task_columns(t.task)[1])}
        for r in t.rows:
            for label in t.columns:
                if label not in cols:
                    continue
                c = r.cells[label]
                w.writerow([t.title, t.task, t.split, r.source, r.method, r.model, r.settings,
                            r.seeds, r.runs or "", label, cols[label].unit,
                            "" if c.mean is None else repr(c.mean),
                            "" if c.std is None else repr(c.std), "" if c.n is None else c.n,
                            c.text])
    return buf.getvalue()


def subject_tables(runs, labels):
    """MMLU's per-subject accuracies: one row per subject, one column per MMLU row (mean over its
    runs), in the markdown only when a results file has "subjects"."""
    groups = [g for g in group_runs(runs, labels) if g.task == "mmlu"
              and any(res.extra.get("subjects") for res in g.results)]
    if not groups:
        return ""
    names = [g.label or method_title(g.first.method) for g in groups]
    subjects = sorted({s for g in groups for res in g.results for s in res.extra.get("subjects", {})})
    col = Column("accuracy", "accuracy", scale=100)
    lines = ["## MMLU per subject (accuracy x 100)\n",
             "| subject | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for s in subjects:
        cells = []
        for g in groups:
            vals = [res.extra.get("subjects", {}).get(s, {}).get("accuracy") for res in g.results]
            mean, std, n = stats([v * 100 if v is not None else None for v in vals])
            cells.append(cell_text(mean, std, n, len(g.runs), col))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pairs(specs, flag):
    out = []
    for s in specs:
        if "=" not in s:
            raise SystemExit(f"report: {flag} {s!r}: expected LABEL=DIR")
        label, d = s.split("=", 1)
        out.append((label, d))
    return out


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m nlg.report", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folders, or folders above them")
    ap.add_argument("--base", action="append", default=[], metavar="LABEL=DIR",
                    help="a folder with a model decoded and scored without adapter (no training "
                         "record): its row, named LABEL, has 0 trainable parameters; first in its table")
    ap.add_argument("--label", action="append", default=[], metavar="LABEL=DIR",
                    help="name the row of run DIR LABEL (display only: rows are grouped by what "
                         "the runs record)")
    ap.add_argument("--published", choices=("matching", "all", "none"), default="matching",
                    help="published rows beside ours: those of our rows' task, model and method")
    ap.add_argument("--out", metavar="PREFIX", help="write PREFIX.md, PREFIX.csv and PREFIX.png")
    ap.add_argument("--out_md")
    ap.add_argument("--out_csv")
    ap.add_argument("--out_png")
    ap.add_argument("--title", help="a line above the tables")
    ap.add_argument("--note", action="append", default=[], help="a line below the tables")
    return ap


def collect(run_dirs, bases=(), labels=()):
    """(runs, {path: label}, unfinished folders) of the command line's folders: base folders
    first; a folder reached twice is read once."""
    runs, names, unfinished, seen = [], {}, [], set()
    for label, d in bases:
        run = read_run(d, base_model=True)
        runs.append(run)
        names[run.path] = label
        seen.add(os.path.realpath(d))
    for spec in run_dirs:
        found, stopped = find_run_dirs(spec)
        unfinished += [d for d in stopped if d not in unfinished]
        for d in found:
            if os.path.realpath(d) not in seen:
                seen.add(os.path.realpath(d))
                runs.append(read_run(d))
    paths = {os.path.realpath(r.path): r.path for r in runs}
    for label, d in labels:
        real = os.path.realpath(d)
        if real not in paths:
            raise RunError(f"--label {label}={d}: {d} is not among the runs read")
        names[paths[real]] = label
    return runs, names, unfinished


def main(argv=None):
    ap = build_parser()
    cli.setup_parser(ap)
    args = ap.parse_args(argv)
    if not args.runs and not args.base:
        ap.error("give at least one RUN_DIR (or --base LABEL=DIR)")
    if args.out:
        args.out_md = args.out_md or args.out + ".md"
        args.out_csv = args.out_csv or args.out + ".csv"
        args.out_png = args.out_png or args.out + ".png"
    try:
        runs, labels, unfinished = collect(args.runs, _pairs(args.base, "--base"),
                                           _pairs(args.label, "--label"))
        tables = build_tables(runs, labels, args.published)
    except RunError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    problems = [f"{d}: unfinished (resume.pt, no run record yet): not in the tables"
                for d in unfinished]
    problems += [f"{r.path}: {p}" for r in runs for p in r.problems]
    text = markdown(tables, args.title, args.note, problems)
    subjects = subject_tables(runs, labels)
    if subjects:
        text += "\n" + subjects
    print(text, end="")
    if args.out_md:
        _write(args.out_md, text)
    if args.out_csv:
        _write(args.out_csv, csv_text(tables))
    if args.out_png:
        from nlg.report_plot import plot_losses
        if plot_losses(group_runs(runs, labels), args.out_png, method_title,
                       lambda task: task_columns(task)[0]):
            print(f"loss curves: {args.out_png}")
    return 0


def _write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(cli.run("report", main))
