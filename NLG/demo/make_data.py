#!/usr/bin/env python
"""Make the demo's own E2E-style data-to-text corpus, deterministically from a seed.

Writes into --out_dir:
  train.txt valid.txt test.txt   E2E lines `MR||REF` in the layout of the LoRA repo's E2E data
                                 (`name : X | Type : pub | ... ||Reference .`), several varied
                                 references per meaning representation (MR); the three splits
                                 share no MR.
  pretrain.txt                   restaurant text of the same domain, one document a line: reviews,
                                 questions and answers, guide notes, and fact cards in a notation
                                 of their own followed by a sentence saying them (never a valid or
                                 test MR): the base model learns the words and to copy from its
                                 context, as a pretrained GPT-2 has; the MR notation and the
                                 MR -> text task are new to it.
  pretrain_formatted.jsonl       the same documents as format_converting-style jsonl with an empty
  pretrain_valid_formatted.jsonl context, so the project's own encoder and trainer pretrain on them.

Punctuation is split off by spaces, as in the E2E references the LoRA repo ships.
"""
import argparse
import json
import os
import random
import sys

NAMES = [
    "The Golden Lamb", "Blue Harbour", "The Red Fox", "Green Olive", "The Silver Spoon",
    "Copper Kettle", "The Old Mill", "Riverside Grill", "The Plough", "Lotus Garden",
    "The Wheatsheaf", "Little Italy", "The Crown", "Maple House", "Saffron Court",
    "The Anchor", "Bella Vista", "The Lantern", "Sakura", "The Black Swan",
    "Olive Tree", "The Bridge Inn", "Spice Route", "The Cellar", "Harbour Lights",
]
NEAR = [
    "the Town Hall", "Central Station", "the Museum", "the Market", "the Cathedral",
    "the Library", "the Park Hotel", "the Theatre", "the Art Gallery", "the Old Bridge",
]
EAT_TYPES = ["restaurant", "pub", "coffee shop"]
FOODS = ["English", "Italian", "French", "Chinese", "Indian", "Japanese", "Fast food"]
PRICES = ["cheap", "moderate", "high", "less than £20", "£20-25", "more than £30"]
RATINGS = ["low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"]
AREAS = ["city centre", "riverside"]
FAMILY = ["yes", "no"]

# E2E field order and the names the LoRA repo's E2E files use for them.
FIELDS = [("name", "name"), ("eatType", "Type"), ("food", "food"), ("priceRange", "price"),
          ("customer rating", "customer rating"), ("area", "area"),
          ("familyFriendly", "family friendly"), ("near", "near")]
OPTIONAL_P = {"eatType": 0.8, "food": 0.75, "priceRange": 0.6, "customer rating": 0.6,
              "area": 0.7, "familyFriendly": 0.55, "near": 0.45}


def sample_mr(rng):
    mr = {"name": rng.choice(NAMES)}
    pools = {"eatType": EAT_TYPES, "food": FOODS, "priceRange": PRICES,
             "customer rating": RATINGS, "area": AREAS, "familyFriendly": FAMILY, "near": NEAR}
    for key, p in OPTIONAL_P.items():
        if rng.random() < p:
            mr[key] = rng.choice(pools[key])
    if len(mr) < 3:  # E2E MRs carry at least three attributes
        return sample_mr(rng)
    return mr


def mr_to_text(mr):
    return " | ".join(f"{label} : {mr[key]}" for key, label in FIELDS if key in mr)


def mr_key(mr):
    return tuple((k, mr.get(k)) for k, _ in FIELDS)


# --- realisation: each attribute has several wordings; sentence plans pick the order -------------

def food_adj(food):
    return "fast food" if food == "Fast food" else food


def price_adj(price, rng):
    return {
        "cheap": rng.choice(["cheap", "low - priced", "inexpensive"]),
        "moderate": rng.choice(["moderately priced", "mid - priced", "average - priced"]),
        "high": rng.choice(["expensive", "high - priced", "pricey"]),
    }.get(price)


def price_phrase(price, rng):
    return {
        "cheap": rng.choice(["with cheap prices", "in the cheap price range", "with low prices"]),
        "moderate": rng.choice(["with moderate prices", "in the moderate price range"]),
        "high": rng.choice(["with high prices", "in the high price range"]),
        "less than £20": rng.choice(["with prices less than £20", "costing less than £20",
                                     "in the less than £20 price range"]),
        "£20-25": rng.choice(["with prices of £20-25", "in the £20-25 price range",
                              "costing £20-25"]),
        "more than £30": rng.choice(["with prices more than £30", "costing more than £30",
                                     "in the more than £30 price range"]),
    }[price]


def price_clause(price, rng):
    value = {"£20-25": "of £20-25"}.get(price, price)
    return rng.choice([f"has prices {value}", f"is in the {price} price range",
                       "offers food " + price_phrase(price, rng)])


def rating_clause(rating, rng):
    if "out of" in rating:
        return rng.choice([f"has a customer rating of {rating}", f"is rated {rating} by customers",
                           f"has a {rating} customer rating"])
    return rng.choice([f"has {article(rating)} {rating} customer rating", f"is rated {rating} by customers",
                       f"has received {rating} ratings from customers"])


def family_clause(family, rng):
    if family == "yes":
        return rng.choice(["is family - friendly", "is kid friendly", "welcomes children"])
    return rng.choice(["is not family - friendly", "is not kid friendly",
                       "does not welcome children"])


def area_phrase(area, rng):
    if area == "city centre":
        return rng.choice(["in the city centre", "in the centre of the city", "in the city centre area"])
    return rng.choice(["in the riverside area", "by the riverside", "on the riverside"])


def near_phrase(near, rng):
    return rng.choice([f"near {near}", f"close to {near}", f"not far from {near}"])


def article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def noun_phrase(mr, rng):
    """'a cheap Italian pub' style phrase from eatType, food and priceRange."""
    words = []
    adj = price_adj(mr["priceRange"], rng) if "priceRange" in mr else None
    if adj:
        words.append(adj)
    if "food" in mr:
        words.append(food_adj(mr["food"]))
    words.append(mr.get("eatType") or rng.choice(["place", "venue", "restaurant"]))
    phrase = " ".join(words)
    return f"{article(phrase)} {phrase}", bool(adj)


def realise(mr, rng):
    name = mr["name"]
    np_, price_used = noun_phrase(mr, rng)
    loc = []
    if "area" in mr:
        loc.append(area_phrase(mr["area"], rng))
    if "near" in mr:
        loc.append(near_phrase(mr["near"], rng))
    rng.shuffle(loc)
    tail = []  # clauses said in a second sentence or after "and"
    if "priceRange" in mr and not price_used:
        tail.append(price_clause(mr["priceRange"], rng))
    if "customer rating" in mr:
        tail.append(rating_clause(mr["customer rating"], rng))
    if "familyFriendly" in mr:
        tail.append(family_clause(mr["familyFriendly"], rng))
    rng.shuffle(tail)
    loc_s = (" " + " ".join(loc)) if loc else ""

    plan = rng.randrange(4)
    if plan == 0:
        first = f"{name} is {np_}{loc_s}"
    elif plan == 1:
        first = f"There is {np_} called {name}{loc_s}"
    elif plan == 2 and loc:
        first = f"Located {' '.join(loc)} , {name} is {np_}"
    else:
        first = f"{name} , {np_}{loc_s} ,"
        if not tail:
            tail.append(rng.choice(["is worth a visit", "is a good choice"]))
    if not tail:
        return first + " ."
    if first.endswith(","):
        return f"{first} {join_and(tail)} ."
    if plan != 1 and len(tail) == 1 and rng.random() < 0.5:  # "There is X called Y and ..." lacks a subject
        return f"{first} and {join_and(tail)} ."
    return f"{first} . {rng.choice(['It', 'It', 'The ' + (mr.get('eatType') or 'venue')])} {join_and(tail)} ."


def join_and(parts):
    if len(parts) == 1:
        return parts[0]
    return " , ".join(parts[:-1]) + " and " + parts[-1]


# --- generic same-domain text for pretraining ------------------------------------------------------

FAMILY_CARD = {"yes": "kids welcome", "no": "no kids"}


def fact_card(mr, rng):
    """A fact card in a notation of its own (not the MR's `key : value | ...`) followed by a
    sentence that says it: text in which the words to write appear earlier in the same
    document, as they often do in a real pretraining corpus. A base model trained on it learns
    to copy from its context, which is what an adapter then steers to the E2E format."""
    vals = [FAMILY_CARD[v] if k == "familyFriendly" else f"near {v}" if k == "near" else
            f"rated {v}" if k == "customer rating" else v
            for k, v in mr.items() if k != "name"]
    rng.shuffle(vals)
    return f"Card : {mr['name']} ; {' ; '.join(vals)} . {realise(mr, rng)}"


def pretrain_doc(rng, held_out=frozenset()):
    """One document; fact cards never state a valid or test MR (held_out: their mr_key)."""
    mr = sample_mr(rng)
    if rng.random() < 0.5:
        while mr_key(mr) in held_out:
            mr = sample_mr(rng)
        return fact_card(mr, rng)
    name = mr["name"]
    food = food_adj(mr.get("food", rng.choice(FOODS)))
    kind = mr.get("eatType", "restaurant")
    area = area_phrase(mr.get("area", rng.choice(AREAS)), rng)
    near = rng.choice(NEAR)
    rating = mr.get("customer rating", rng.choice(RATINGS))
    price = mr.get("priceRange", rng.choice(PRICES))
    style = rng.randrange(5)
    if style == 0:
        return (f"Review : we went to {name} on a {rng.choice(['Monday', 'Friday', 'Sunday', 'rainy evening'])} . "
                f"The {food} dishes were {rng.choice(['lovely', 'fine', 'cold', 'fresh', 'too salty'])} "
                f"and the bill was {price} . I would give it {rating} .")
    if style == 1:
        return (f"Q : where can I get {food} food {area} ? "
                f"A : try the {kind} {name} , {near_phrase(near, rng)} . "
                f"Children are {'welcome' if mr.get('familyFriendly') != 'no' else 'not welcome'} there .")
    if style == 2:
        return (f"City guide : {area} you will find {name} . "
                f"Most visitors call it a {rng.choice(['friendly', 'busy', 'quiet', 'popular'])} {kind} . "
                f"Prices : {price} . Customer rating : {rating} .")
    if style == 3:
        return (f"Customers say the {food} food at {name} is {rng.choice(['good', 'great', 'average', 'poor'])} "
                f"and the staff are {rng.choice(['kind', 'slow', 'helpful', 'busy'])} . "
                f"Many families {'bring their kids' if mr.get('familyFriendly') == 'yes' else 'visit'} "
                f"because it is {near_phrase(near, rng)} .")
    return (f"Notes on {name} : {kind} , {food} menu , {area} . "
            f"The prices are {price} and the customer rating is {rating} . "
            f"Is it family friendly ? {rng.choice(['yes', 'no'])} .")


def split_mrs(rng, n_train, n_valid, n_test):
    seen, mrs = set(), []
    total = n_train + n_valid + n_test
    tries = 0
    while len(mrs) < total:
        tries += 1
        if tries > total * 200:
            sys.exit(f"make_data.py: could not draw {total} distinct MRs; ask for fewer")
        mr = sample_mr(rng)
        if mr_key(mr) in seen:
            continue
        seen.add(mr_key(mr))
        mrs.append(mr)
    return mrs[:n_train], mrs[n_train:n_train + n_valid], mrs[n_train + n_valid:]


def references(mrs, refs, rng):
    """Up to `refs` distinct references per MR, in drawing order."""
    out = []
    for mr in mrs:
        done = []
        for _ in range(refs * 5):
            if len(done) == refs:
                break
            ref = realise(mr, rng)
            if ref not in done:
                done.append(ref)
        out.append(done)
    return out


def write_split(path, mrs, refs):
    with open(path, "w", encoding="utf-8") as f:
        for mr, rs in zip(mrs, refs):
            f.writelines(f"{mr_to_text(mr)}||{ref}\n" for ref in rs)


def triples(mr):
    return [(mr["name"], key.replace(" ", "_"), mr[key]) for key, _ in FIELDS
            if key != "name" and key in mr]


def write_task_raw(root, splits):
    """The same MRs and references as every NLG task's raw files (the paths of nlg/tasks.py):
    E2E lines, WebNLG 2017 entries (even MRs in a category seen in training, odd ones in an
    unseen one, so both --filter halves have examples), DART entries; for smoke runs of any
    task script (run_task.sh --smoke)."""
    from nlg.tasks import TASKS
    for task in TASKS.values():
        for split, rel in task.raw:
            mrs, refs = splits["valid" if split == "valid" else split]
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if task.name == "e2e":
                write_split(path, mrs, refs)
                continue
            if task.name == "webnlg":
                data = {"entries": [{str(i + 1): {
                    "category": "Building" if i % 2 == 0 else "Restaurant",
                    "modifiedtripleset": [{"subject": a, "property": b, "object": c}
                                          for a, b, c in triples(mr)],
                    "lexicalisations": [{"comment": "good", "lex": r} for r in rs]}}
                    for i, (mr, rs) in enumerate(zip(mrs, refs))]}
            else:
                data = [{"tripleset": [list(t) for t in triples(mr)],
                         "annotations": [{"source": "demo", "text": r} for r in rs]}
                        for mr, rs in zip(mrs, refs)]
            with open(path, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n_train", type=int, default=600, help="distinct training MRs")
    ap.add_argument("--n_valid", type=int, default=40)
    ap.add_argument("--n_test", type=int, default=60)
    ap.add_argument("--train_refs", type=int, default=3, help="references per training MR")
    ap.add_argument("--test_refs", type=int, default=5, help="references per valid/test MR")
    ap.add_argument("--n_pretrain", type=int, default=4000, help="pretraining documents")
    ap.add_argument("--task_raw", default=None, metavar="ROOT",
                    help="also write the splits as every NLG task's raw files under ROOT "
                         "(e2e/, webnlg_challenge_2017/, dart/: create_datasets.sh --from ROOT)")
    args = ap.parse_args(argv)
    for k in ("n_train", "n_valid", "n_test", "train_refs", "test_refs", "n_pretrain"):
        if getattr(args, k) < 1:
            ap.error(f"--{k} must be at least 1")

    os.makedirs(args.out_dir, exist_ok=True)
    # One generator per output, so changing one size leaves the other files as they were.
    train, valid, test = split_mrs(random.Random(f"{args.seed}-mrs"), args.n_train, args.n_valid, args.n_test)
    splits = {"train": (train, references(train, args.train_refs, random.Random(f"{args.seed}-train"))),
              "valid": (valid, references(valid, args.test_refs, random.Random(f"{args.seed}-valid"))),
              "test": (test, references(test, args.test_refs, random.Random(f"{args.seed}-test")))}
    for split, (mrs, refs) in splits.items():
        write_split(os.path.join(args.out_dir, f"{split}.txt"), mrs, refs)
    if args.task_raw:
        write_task_raw(args.task_raw, splits)

    prng = random.Random(f"{args.seed}-pretrain")
    held_out = frozenset(mr_key(m) for m in valid + test)
    docs = [pretrain_doc(prng, held_out) for _ in range(args.n_pretrain)]
    n_val = max(1, len(docs) // 20)
    with open(os.path.join(args.out_dir, "pretrain.txt"), "w", encoding="utf-8") as f:
        f.writelines(d + "\n" for d in docs)
    for fname, part in (("pretrain_formatted.jsonl", docs[n_val:] or docs),
                        ("pretrain_valid_formatted.jsonl", docs[:n_val])):
        with open(os.path.join(args.out_dir, fname), "w", encoding="utf-8") as f:
            for d in part:
                f.write(json.dumps({"context": "", "completion": d}) + "\n")
    print(f"make_data: {len(train)}/{len(valid)}/{len(test)} train/valid/test MRs, "
          f"{len(docs)} pretraining documents -> {args.out_dir}")


if __name__ == "__main__":
    main()
