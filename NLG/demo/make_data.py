#!/usr/bin/env python
"""Make the demo's own E2E-style data-to-text corpus, deterministically from a seed.

Writes into --out_dir:
  train.txt valid.txt test.txt   E2E lines `MR||REF` in the layout of the LoRA repo's E2E data
                                 (`name : X | Type : pub | ... ||Reference .`), several varied
                                 references per meaning representation (MR); the three splits
                                 share no MR.
  pretrain.txt                   generic restaurant text of the same domain, one document a line,
                                 written in other styles (reviews, questions and answers, guide
                                 notes): the base model learns the words, not the MR -> text task.
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

def pretrain_doc(rng):
    mr = sample_mr(rng)
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


def write_split(path, mrs, refs, rng):
    with open(path, "w", encoding="utf-8") as f:
        for mr in mrs:
            done = set()
            for _ in range(refs * 5):
                if len(done) == refs:
                    break
                ref = realise(mr, rng)
                if ref in done:
                    continue
                done.add(ref)
                f.write(f"{mr_to_text(mr)}||{ref}\n")


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
    args = ap.parse_args(argv)
    for k in ("n_train", "n_valid", "n_test", "train_refs", "test_refs", "n_pretrain"):
        if getattr(args, k) < 1:
            ap.error(f"--{k} must be at least 1")

    os.makedirs(args.out_dir, exist_ok=True)
    # One generator per output, so changing one size leaves the other files as they were.
    train, valid, test = split_mrs(random.Random(f"{args.seed}-mrs"), args.n_train, args.n_valid, args.n_test)
    write_split(os.path.join(args.out_dir, "train.txt"), train, args.train_refs, random.Random(f"{args.seed}-train"))
    write_split(os.path.join(args.out_dir, "valid.txt"), valid, args.test_refs, random.Random(f"{args.seed}-valid"))
    write_split(os.path.join(args.out_dir, "test.txt"), test, args.test_refs, random.Random(f"{args.seed}-test"))

    prng = random.Random(f"{args.seed}-pretrain")
    docs = [pretrain_doc(prng) for _ in range(args.n_pretrain)]
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
