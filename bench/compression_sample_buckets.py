#!/usr/bin/env python3
"""Level 1 (fixed parameters) vs level 3 on 1 MiB pieces, bucketed by the level-1 ratio of the
16 KiB sample from the middle of each piece (the sample the incompressibility test takes):
where level 3 earns, as a function of what the sample shows (issue 15, ADR 0022).

    pip install zstandard; python3 bench/compression_sample_buckets.py DIR
"""
root=sys.argv[1]; PIECE=1<<20; S=16<<10
P=zs.ZstdCompressionParameters
l1=zs.ZstdCompressor(compression_params=P(window_log=19, hash_log=14, chain_log=14, search_log=1, min_match=5, target_length=0, strategy=zs.STRATEGY_FAST))
l3=zs.ZstdCompressor(level=3)
b={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        p=os.path.join(dp,f)
        if os.path.islink(p) or not os.path.isfile(p): continue
        d=open(p,'rb').read()
        for i in range(0,len(d),PIECE):
            pc=d[i:i+PIECE]
            if len(pc)<=2*S: continue
            st=len(pc)//2-S//2
            sr=len(l1.compress(pc[st:st+S]))/S
            if sr>0.97: continue
            k=round(sr*20)/20
            a=len(l1.compress(pc)); c=len(l3.compress(pc))
            x=b.setdefault(k,[0,0,0]); x[0]+=len(pc); x[1]+=a; x[2]+=c
for k in sorted(b): print("sample %.2f raw %7.1f MB  L1f %7.2f  L3 %7.2f  diff %+.2f" % (k, b[k][0]/1e6, b[k][1]/1e6, b[k][2]/1e6, (b[k][2]-b[k][1])/1e6))
