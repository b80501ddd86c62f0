#!/usr/bin/env python3
"""Compressed size by level-1 ratio class for several zstd parameter sets (issue 15, ADR 0022).

    pip install zstandard; PIECE=262144 python3 bench/compression_classes.py DIR [MAX_BYTES]

Cuts every file under DIR into fixed PIECE-byte pieces (an approximation of chunks),
classes them by their level-1 ratio and prints the MB each parameter set stores per class
and its CPU seconds. Results quoted in bench/results/2026-12-06-zstd-level1-params.txt."""
import os, sys, time, zstandard as zs
root = sys.argv[1]; cap = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 40
PIECE = int(os.environ.get("PIECE", 256 << 10))
P = zs.ZstdCompressionParameters
def fast(h, m, w=19): return zs.ZstdCompressor(compression_params=P(window_log=w, hash_log=h, chain_log=h, search_log=1, min_match=m, target_length=0, strategy=zs.STRATEGY_FAST))
levels = {"L1": zs.ZstdCompressor(level=1), "L3": zs.ZstdCompressor(level=3),
          "f14m5": fast(14,5), "f15m5": fast(15,5), "f16m5": fast(16,5), "f17m5": fast(17,5), "f16m4": fast(16,4), "f16m6": fast(16,6),
          }
classes = [(0, .05), (.05, .15), (.15, .40), (.40, .6), (.6, .97), (.97, 9)]
tot = {c: {"raw": 0, **{k: 0 for k in levels}} for c in classes}
t = {k: 0.0 for k in levels}
seen = 0
for dp, dn, fn in os.walk(root):
    dn.sort()
    for f in sorted(fn):
        p = os.path.join(dp, f)
        if os.path.islink(p) or not os.path.isfile(p): continue
        with open(p, 'rb') as fh:
            data = fh.read()
        for i in range(0, len(data), PIECE):
            piece = data[i:i+PIECE]
            if len(piece) < 64: continue
            s = time.process_time(); l1 = len(levels["L1"].compress(piece)); t["L1"] += time.process_time() - s
            r = l1 / len(piece)
            c = next(c for c in classes if c[0] <= r < c[1])
            tot[c]["raw"] += len(piece); tot[c]["L1"] += min(l1, len(piece))
            for k, z in levels.items():
                if k == "L1": continue
                if r >= .97 or r < 0.0:
                    tot[c][k] += len(piece); continue
                s = time.process_time(); n = len(z.compress(piece)); t[k] += time.process_time() - s
                tot[c][k] += min(n, l1) if False else n
        seen += len(data)
        if seen > cap: break
    if seen > cap: break
print("root", root, "bytes", seen)
print("class      raw_MB " + " ".join("%8s" % k for k in levels))
for c in classes:
    v = tot[c]
    print("%4.2f-%4.2f " % c + "%8.1f" % (v["raw"]/1e6) + " ".join("%8.2f" % (v[k]/1e6) for k in levels))
print("cpu s     ", " ".join("%s=%.2f" % (k, t[k]) for k in levels))
