#!/usr/bin/env python3
"""Compares dumped f32 logits with a reference (stdlib only: the GPU image
may lack numpy).

  cuda_logits_cmp.py OURS.f32 REF (golden.safetensors[:tensor] | other.f32)
                     [--rows N] [--offset R] [--tol 1e-3]

Per row: relative L2 error ||ours - ref|| / ||ref|| over the vocabulary;
argmax agreement where the reference's top-2 margin exceeds 1e-3.  Prints
one summary line and exits 1 when the maximum error exceeds --tol or any
value is not finite."""
import json, math, struct, sys, array

def load_f32(path):
    a = array.array('f')
    with open(path, 'rb') as f:
        a.frombytes(f.read())
    return a

def load_safetensor(path, name):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        hdr = json.loads(f.read(n))
        t = hdr[name]
        b, e = t['data_offsets']
        f.seek(8 + n + b)
        a = array.array('f')
        a.frombytes(f.read(e - b))
        return a, t['shape']

def main():
    args = sys.argv[1:]
    opt = {'--rows': None, '--offset': '0', '--tol': '1e-3', '--vocab': None}
    pos = []
    i = 0
    while i < len(args):
        if args[i] in opt:
            opt[args[i]] = args[i + 1]; i += 2
        else:
            pos.append(args[i]); i += 1
    ours = load_f32(pos[0])
    ref_spec = pos[1]
    if '.safetensors' in ref_spec:
        path, _, name = ref_spec.partition(':')
        ref, shape = load_safetensor(path, name or 'logits')
        V = shape[1]
    else:
        ref = load_f32(ref_spec)
        V = int(opt['--vocab'])
    off = int(opt['--offset'])
    nrows = len(ours) // V
    if opt['--rows']:
        nrows = min(nrows, int(opt['--rows']))
    worst, total, agree, counted, bad = 0.0, 0.0, 0, 0, 0
    worst_row = -1
    for r in range(nrows):
        o = ours[r * V:(r + 1) * V]
        g = ref[(r + off) * V:(r + off + 1) * V]
        num = den = 0.0
        for a, b in zip(o, g):
            if not math.isfinite(a):
                bad += 1
            d = a - b
            num += d * d
            den += b * b
        rel = math.sqrt(num / den) if den > 0 else math.sqrt(num)
        total += rel
        if rel > worst or not math.isfinite(rel):
            worst, worst_row = rel, r
        s = sorted(range(V), key=lambda j: -g[j])[:2]
        if g[s[0]] - g[s[1]] > 1e-3:
            counted += 1
            agree += max(range(V), key=lambda j: o[j]) == s[0]
    tol = float(opt['--tol'])
    ok = bad == 0 and worst <= tol
    print("%s rows %d: max rel %.3g (row %d) mean %.3g argmax %d/%d non-finite %d -> %s" %
          (pos[0], nrows, worst, worst_row, total / max(nrows, 1), agree, counted, bad, 'PASS' if ok else 'FAIL'))
    sys.exit(0 if ok else 1)

main()
