"""Published numbers (the targets a reproduction is compared with), in one table.

`nlg.report` prints these rows beside a run's rows, and the README's "Published numbers
(targets)" tables are `readme_tables()` of the same rows (tests/test_report.py checks that the
README holds exactly that text), so a number is copied from a paper once. Values are kept as
the paper prints them ("70.4±.1": mean 70.4, std .1), in the scale the report shows our runs in
(E2E's BLEU, METEOR and ROUGE-L x 100; GenerationEval's BLEU 0-100, METEOR and TER as
fractions).
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

# The GPT-2 model cards and the names papers give them.
GPT2_MODELS = {"gpt2.sm": "GPT-2 S", "gpt2.md": "GPT-2 M", "gpt2.lg": "GPT-2 L"}

LORA_PAPER = "LoRA paper (arXiv 2106.09685 v2)"
SOURCES = {
    "e2e": f"{LORA_PAPER}, Table 3, GPT-2 on E2E, mean of 3 seeds, * = from prior work",
    "webnlg": f"{LORA_PAPER}, Table 14 (BLEU on the unseen / seen / all categories)",
    "dart": f"{LORA_PAPER}, Table 13",
}


@dataclass(frozen=True)
class PublishedRow:
    task: str                   # nlg.tasks / report task name
    split: str                  # "all", or WebNLG's "seen" / "unseen"
    model_card: str             # the card our runs record (gpt2.md), named by GPT2_MODELS
    printed_method: str         # as the paper prints it ("FT*", "LoRA")
    method: str                 # the loralib method family it is ("full", "lora")
    params: Optional[str]       # trainable parameters as printed ("0.35M"), if the table has them
    values: Tuple[Tuple[str, str], ...]   # (scorer key, value as printed)

    @property
    def source(self) -> str:
        return SOURCES[self.task]

    @property
    def model(self) -> str:
        return GPT2_MODELS[self.model_card]


def _e2e(card, printed, method, params, bleu, nist, meteor, rouge, cider):
    return PublishedRow("e2e", "all", card, printed, method, params,
                        (("BLEU", bleu), ("NIST", nist), ("METEOR", meteor), ("ROUGE_L", rouge),
                         ("CIDEr", cider)))


def _webnlg_dart(card, printed, method, unseen, seen, all_, bleu, meteor, ter):
    rows = [PublishedRow("webnlg", split, card, printed, method, None, (("BLEU", v),))
            for split, v in (("unseen", unseen), ("seen", seen), ("all", all_))]
    rows.append(PublishedRow("dart", "all", card, printed, method, None,
                             (("BLEU", bleu), ("METEOR", meteor), ("TER", ter))))
    return rows


PUBLISHED: List[PublishedRow] = [
    _e2e("gpt2.md", "FT*", "full", "354.92M", "68.2", "8.62", "46.2", "71.0", "2.47"),
    _e2e("gpt2.md", "LoRA", "lora", "0.35M", "70.4±.1", "8.85±.02", "46.8±.2", "71.8±.1", "2.53±.02"),
    _e2e("gpt2.lg", "FT*", "full", "774.03M", "68.5", "8.78", "46.0", "69.9", "2.45"),
    _e2e("gpt2.lg", "LoRA", "lora", "0.77M", "70.4±.1", "8.89±.02", "46.8±.2", "72.0±.2", "2.47±.02"),
    *_webnlg_dart("gpt2.md", "FT", "full", "27.7", "64.2", "46.5", "46.2", "0.39", "0.46"),
    *_webnlg_dart("gpt2.md", "LoRA", "lora", "46.7±.4", "62.1±.2", "55.3±.2", "47.1±.2", "0.39", "0.46"),
    *_webnlg_dart("gpt2.lg", "FT", "full", "43.1", "65.3", "55.5", "47.0", "0.39", "0.46"),
    *_webnlg_dart("gpt2.lg", "LoRA", "lora", "48.4±.3", "64.0±.3", "57.0±.1", "47.5±.1", "0.39", "0.45"),
]

_PRINTED = re.compile(r"^(\d*\.?\d+)(?:±(\d*\.?\d+))?$")


def parse_printed(text: str) -> Tuple[float, Optional[float]]:
    """(mean, std or None) of a value as a paper prints it: "70.4±.1", "8.62"."""
    m = _PRINTED.match(text.strip())
    if not m:
        raise ValueError(f"published value {text!r} is not 'MEAN' or 'MEAN±STD'")
    return float(m.group(1)), (float(m.group(2)) if m.group(2) is not None else None)


def rows_for(task: str, split: str) -> List[PublishedRow]:
    return [r for r in PUBLISHED if r.task == task and r.split == split]


def readme_tables() -> Dict[str, str]:
    """The README's two tables ("e2e"; "webnlg_dart": WebNLG BLEU U / S / A beside DART), as
    markdown lines."""
    e2e = ["| model | method | params (paper) | BLEU | NIST | METEOR | ROUGE-L | CIDEr |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows_for("e2e", "all"):
        e2e.append("| " + " | ".join([r.model, r.printed_method, r.params or "-",
                                      *(v for _, v in r.values)]) + " |")
    gen = ["| model | method | WebNLG BLEU U / S / A | DART BLEU | DART MET | DART TER |",
           "|---|---|---|---|---|---|"]
    for d in rows_for("dart", "all"):
        web = {r.split: dict(r.values)["BLEU"] for r in PUBLISHED if r.task == "webnlg"
               and (r.model_card, r.printed_method) == (d.model_card, d.printed_method)}
        gen.append("| " + " | ".join([d.model, d.printed_method,
                                      " / ".join(web[s] for s in ("unseen", "seen", "all")),
                                      *(v for _, v in d.values)]) + " |")
    return {"e2e": "\n".join(e2e), "webnlg_dart": "\n".join(gen)}
