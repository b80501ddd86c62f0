#!/usr/bin/env python3
"""A small deterministic sample tree (about 10 MiB) for the demo when the shared
dataset generator is not beside the repository."""
import os
import random
import sys

root = sys.argv[1]
rng = random.Random("haven-demo")
words = "backup restore tenant snapshot pack index chunk replica volume".split()
for d in range(8):
    folder = os.path.join(root, "service-%d" % d, "data")
    os.makedirs(folder, exist_ok=True)
    for f in range(40):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 4000)))
        with open(os.path.join(folder, "file-%03d.txt" % f), "w") as out:
            out.write(text + "\n")
with open(os.path.join(root, "random.bin"), "wb") as out:
    out.write(rng.randbytes(4 << 20))
