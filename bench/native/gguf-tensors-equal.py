#!/usr/bin/env python3
"""Compares two GGUF files tensor by tensor: name, shape, type and bytes (metadata is not compared).

    python3 bench/native/gguf-tensors-equal.py A.gguf B.gguf

Prints each tensor that differs (how many of its bytes) and a count; exits 0 only if every tensor of A is in B
with the same shape, type and bytes, and B has no other tensors. Used to check `dss convert --type T` against
`llama-quantize F16.gguf OUT.gguf T` on the same F16 file (docs/benchmarks.md).
"""
import struct
import sys

SCALARS = {0: '<B', 1: '<b', 2: '<H', 3: '<h', 4: '<I', 5: '<i', 6: '<f', 7: '<?', 10: '<Q', 11: '<q', 12: '<d'}


def read_header(path):
    f = open(path, 'rb')

    def unpack(fmt):
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

    def string():
        return f.read(unpack('<Q')).decode('utf-8', 'replace')

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = unpack('<I'), unpack('<Q')
            return [value(et) for _ in range(n)]
        return unpack(SCALARS[t])

    if f.read(4) != b'GGUF':
        sys.exit(f'{path}: not a GGUF file')
    unpack('<I')  # version
    n_tensors, n_kv = unpack('<Q'), unpack('<Q')
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(unpack('<I'))
    tensors = {}
    for _ in range(n_tensors):
        name = string()
        dims = [unpack('<Q') for _ in range(unpack('<I'))]
        tensors[name] = (dims, unpack('<I'), unpack('<Q'))
    align = meta.get('general.alignment', 32)
    data = (f.tell() + align - 1) // align * align
    size = f.seek(0, 2)
    # A tensor's bytes run to the next tensor's offset (or the end of the file).
    starts = sorted(t[2] for t in tensors.values()) + [size - data]
    extents = {name: (data + off, starts[starts.index(off) + 1] - off) for name, (_, _, off) in tensors.items()}
    return f, meta, tensors, extents


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    fa, ma, ta, ea = read_header(sys.argv[1])
    fb, mb, tb, eb = read_header(sys.argv[2])
    print('file_type', ma.get('general.file_type'), mb.get('general.file_type'))
    same = differ = 0
    for name, (dims, typ, _) in ta.items():
        if name not in tb:
            print('only in A:', name)
            differ += 1
            continue
        if tb[name][0] != dims or tb[name][1] != typ:
            print('shape or type differs:', name, dims, typ, tb[name][0], tb[name][1])
            differ += 1
            continue
        (pa, na), (pb, nb) = ea[name], eb[name]
        fa.seek(pa)
        fb.seek(pb)
        a, b = fa.read(na), fb.read(min(na, nb))
        if a == b:
            same += 1
        else:
            differ += 1
            print('bytes differ:', name, 'type', typ, sum(1 for x, y in zip(a, b) if x != y), 'of', na)
    for name in tb:
        if name not in ta:
            print('only in B:', name)
            differ += 1
    print('same', same, 'differ', differ)
    sys.exit(0 if differ == 0 else 1)


if __name__ == '__main__':
    main()
