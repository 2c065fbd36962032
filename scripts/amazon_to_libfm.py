#!/usr/bin/python3
"""Turns an Amazon review sequence file of ../shared/data/amazon_seq (the
S3-Rec preprocessing: `<Name>.txt`, one user per line `user item item ...`
in time order, and `<Name>_item2attributes.json`, item -> [attribute id,
...]) into a click-through dataset in libFM format, for configs/amazon.yaml.

    /usr/bin/python3 scripts/amazon_to_libfm.py \\
        ../shared/data/amazon_seq/Beauty.txt runs/data/amazon-beauty \\
        [--attributes FILE] [--negatives 1] [--slots 6] [--seed 2024]

Writes OUT_DIR/train.libfm, valid.libfm, test.libfm and OUT_DIR/stats.json.
OUT_DIR must be outside the repository's tracked files (the data may not be
redistributed; runs/ is gitignored). Python 3 standard library only.

What a line is: `label u:1 i:1 a1:1 ... aS:1`, always 2 + S features, one
per field in a fixed order (maskps's libFM reader makes the k-th feature
field k): the user, the item, then the item's attribute ids in the order
the JSON lists them (categories and brand, as integer ids; which one is
the brand is not recorded), one slot each. An item with fewer than S
attributes fills the remaining slots with that slot's "none" index; one
with more keeps the first S (--slots 6 keeps all of Beauty's). Indices are
global: users, items, attribute ids and the none-tokens occupy disjoint
ranges (the offsets are in stats.json), so one index names one thing.

Splits (leave-last-out, per user): the last item is the test positive, the
second last the validation positive, every earlier item a training
positive. Each positive gets --negatives negatives, items drawn uniformly
from the items the user never interacted with (anywhere in the sequence),
without repeats within one positive's draw; the draws come from one
random.Random(seed), users in file order, so the files are a function of
(input, seed, negatives, slots). Training lines are shuffled with the same
generator (maskps reads the training file in order and has no shuffling of
its own; in user order every batch would hold a few users only);
validation and test stay in user order.
"""

import argparse
import json
import os
import random
import sys


def fail(msg):
    sys.exit("amazon_to_libfm: " + msg)


def read_sequences(path):
    users = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                ids = [int(x) for x in parts]
            except ValueError:
                fail("%s:%d: not a list of integer ids" % (path, n))
            if len(ids) < 4:
                fail("%s:%d: user %d has %d items; leave-last-out needs at "
                     "least 3" % (path, n, ids[0], len(ids) - 1))
            users.append((ids[0], ids[1:]))
    if not users:
        fail("%s: no users" % path)
    return users


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sequences", help="<Name>.txt")
    ap.add_argument("out_dir")
    ap.add_argument("--attributes", help="item -> attribute ids JSON "
                    "[<Name>_item2attributes.json beside the sequences]")
    ap.add_argument("--negatives", type=int, default=1,
                    help="negatives per positive [1]")
    ap.add_argument("--slots", type=int, default=6,
                    help="attribute fields per line [6]")
    ap.add_argument("--seed", type=int, default=2024)
    a = ap.parse_args()
    if a.negatives < 1 or a.slots < 0:
        fail("--negatives must be >= 1 and --slots >= 0")
    attr_path = a.attributes
    if not attr_path and a.sequences.endswith(".txt"):
        attr_path = a.sequences[:-len(".txt")] + "_item2attributes.json"
    if not attr_path:
        fail("--attributes is needed when the sequences file is not "
             "<Name>.txt")
    users = read_sequences(a.sequences)
    with open(attr_path) as f:
        attrs = {int(k): v for k, v in json.load(f).items()}
    items = sorted({i for _, seq in users for i in seq})
    missing = [i for i in items if i not in attrs]
    if missing:
        fail("%s: %d items have no attribute list (first: %d)"
             % (attr_path, len(missing), missing[0]))

    # disjoint index ranges: users, items, attribute ids, none-tokens
    max_user = max(u for u, _ in users)
    max_item = max(items)
    max_attr = max((x for v in attrs.values() for x in v), default=0)
    off_item = max_user + 1
    off_attr = off_item + max_item + 1
    off_none = off_attr + max_attr + 1

    def line(label, user, item):
        feats = [user, off_item + item]
        av = attrs[item][:a.slots]
        feats += [off_attr + x for x in av]
        feats += [off_none + s for s in range(len(av), a.slots)]
        return "%d %s\n" % (label, " ".join("%d:1" % x for x in feats))

    rng = random.Random(a.seed)
    parts = {"train": [], "valid": [], "test": []}
    for user, seq in users:
        seen = set(seq)
        if len(seen) + a.negatives > len(items):
            fail("user %d has seen too many items to draw %d negatives"
                 % (user, a.negatives))
        for k, item in enumerate(seq):
            part = "test" if k == len(seq) - 1 else \
                "valid" if k == len(seq) - 2 else "train"
            parts[part].append(line(1, user, item))
            drawn = set()
            while len(drawn) < a.negatives:
                neg = items[rng.randrange(len(items))]
                if neg not in seen and neg not in drawn:
                    drawn.add(neg)
                    parts[part].append(line(0, user, neg))
    truncated = sum(1 for i in items if len(attrs[i]) > a.slots)
    rng.shuffle(parts["train"])

    os.makedirs(a.out_dir, exist_ok=True)
    for name, lines in parts.items():
        tmp = os.path.join(a.out_dir, name + ".libfm.tmp")
        with open(tmp, "w") as f:
            f.writelines(lines)
        os.replace(tmp, os.path.join(a.out_dir, name + ".libfm"))
    stats = {
        "sequences": os.path.abspath(a.sequences),
        "attributes": os.path.abspath(attr_path),
        "seed": a.seed, "negatives": a.negatives, "slots": a.slots,
        "fields": 2 + a.slots, "users": len(users), "items": len(items),
        "items_with_more_attributes_than_slots": truncated,
        "lines": {k: len(v) for k, v in parts.items()},
        "positives": {k: len(v) // (1 + a.negatives)
                      for k, v in parts.items()},
        "index_offsets": {"user": 0, "item": off_item, "attribute": off_attr,
                          "none": off_none},
    }
    with open(os.path.join(a.out_dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
        f.write("\n")
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
