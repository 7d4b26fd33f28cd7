using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Sixteen rows of a 32-weight block format as the one-token byte kernels read them: one tile per block of 32
/// columns, 544 bytes, every value the file stores and nothing else:
/// <list type="bullet">
/// <item>bytes [0, 32): the sixteen rows' fp16 scales d, row r at 2r.</item>
/// <item>[32, 544): codes + bias as unsigned bytes (Q8_0 with AVX-VNNI: code ^ 0x80, i.e. code + 128; without VNNI
/// Q8_0's codes are kept signed, bias 0). Group g (64 bytes) covers columns 4g..4g+3: byte 4r + i holds row r's
/// code of column 4g + i. One 256-bit load is the same four columns of eight rows, so a broadcast 32-bit group of
/// activations and one <c>vpdpbusd</c> (without VNNI: <c>vpmaddubsw</c> + <c>vpmaddwd</c>, with the sign trick for
/// signed codes) add them to eight rows' sums, each row in its own 32-bit lane: no reduction per row.</item>
/// </list>
/// 544 = 17 × 32, so every 256-bit load of a tile stays inside one cache line, and consecutive tiles are one stream.
/// With AVX-VNNI the panel kernels pack rows of Q8_0, Q4_0 and Q5_0 into these tiles for a prompt
/// (<see cref="BlockGemm{T}.PackBytes"/>) and a Q8_0 matrix in memory is kept in them (<see cref="Q8Tiles"/>), so
/// neither a prompt nor a decoded token unpacks anything; without VNNI six to 63 tokens are multiplied straight from
/// the tiles (<see cref="Multiply{TCodes}"/>) and a longer prompt widens a group's tiles into int16 panels
/// (<see cref="PackShorts{TCodes}"/>).</summary>
internal static unsafe class ByteTiles
{
    public const int Rows = 16, ScaleBytes = 32, CodeBytes = 512, BlockBytes = ScaleBytes + CodeBytes;

    /// <summary>Rows <paramref name="first"/> .. + 7 of a tile's scales as float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Scales(byte* tile, int first) => HalfTable.ToSingle(Vector128.Load((ushort*)tile + first));

    /// <summary>A group of <typeparamref name="TCodes"/> tiles (<see cref="Q4Tiles"/>, <see cref="Q5Tiles"/>) as byte
    /// tiles (544 bytes a block) at <paramref name="tiles"/>, for <see cref="BlockGemm{T}.MultiplyBytes"/> with several
    /// tokens: the scales copied, each column group's codes a byte.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Unpack<TCodes>(byte* group, int blocks, byte* tiles) where TCodes : struct, IByteTileCodes
    {
        for (int b = 0; b < blocks; b++)
        {
            byte* t = group + (long)b * TCodes.TileBytes, o = tiles + (long)b * BlockBytes;
            Vector256.Load(t).Store(o);
            StoreGroup<TCodes>(t, o, 0);
            StoreGroup<TCodes>(t, o, 1);
            StoreGroup<TCodes>(t, o, 2);
            StoreGroup<TCodes>(t, o, 3);
            StoreGroup<TCodes>(t, o, 4);
            StoreGroup<TCodes>(t, o, 5);
            StoreGroup<TCodes>(t, o, 6);
            StoreGroup<TCodes>(t, o, 7);
        }
    }

    /// <summary>Tiles <see cref="Unpack{TCodes}"/> wrote from <typeparamref name="TCodes"/> tiles: every code a byte, as
    /// this class lays them out, with that format's bias.</summary>
    internal readonly struct Unpacked<TCodes> : IByteTileCodes where TCodes : struct, IByteTileCodes
    {
        public static int TileBytes => BlockBytes;
        public static int Bias => TCodes.Bias;
        public static int MaxCode => TCodes.MaxCode;
        public static int Ahead => 4; // read from cache, where the one-token kernel's look-ahead is not taken

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Half(byte* tile, int g, int half) => Stored(tile, g, half);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreGroup<TCodes>(byte* t, byte* o, int g) where TCodes : struct, IByteTileCodes
    {
        Group<TCodes>(t, g, out Vector256<byte> rows0, out Vector256<byte> rows8);
        rows0.Store(o + ScaleBytes + 64 * g);
        rows8.Store(o + ScaleBytes + 64 * g + 32);
    }

    /// <summary>Token <paramref name="token"/> of <paramref name="a"/> (quantised per 32) against the sixteen rows of
    /// a group of <typeparamref name="TCodes"/> tiles: row r's result in <paramref name="lanes"/>[r].</summary>
    public static void One<TCodes>(byte* group, int blocks, QuantizedActivations a, int token, float* lanes) where TCodes : struct, IByteTileCodes
    {
        if (a.Q.Length < (long)(token + 1) * blocks * 32 || a.D.Length < (token + 1) * blocks || a.BlockSum.Length < (token + 1) * blocks)
            ThrowHelper.TooShort(nameof(a), (long)(token + 1) * blocks * 32, a.Q.Length);
        float* partials = stackalloc float[8 * Rows];
        fixed (sbyte* q = a.Q) fixed (float* d = a.D) fixed (short* s = a.BlockSum)
        {
            if (Avx512F.IsSupported)
                OneKernel512<TCodes>(group, blocks, q + (long)token * blocks * 32, d + token * blocks, s + token * blocks, partials, lanes);
            else
                OneKernel<TCodes>(group, blocks, q + (long)token * blocks * 32, d + token * blocks, s + token * blocks, partials, lanes);
        }
    }

    /// <summary>Tokens <paramref name="token"/> .. + 3 of <paramref name="a"/> against the sixteen rows of a group:
    /// token t's row r in <paramref name="lanes"/>[16t + r], each the bits <see cref="One{TCodes}"/> gives it. The
    /// codes of a column group are loaded (and, signed, made absolute) once for the four tokens: without AVX-VNNI, where
    /// a verify pass of four tokens would otherwise run the one-token kernel four times over each group.</summary>
    /// <param name="scales">null, or room for the group's scales as float32 (16 · <paramref name="blocks"/> floats), for
    /// a group that several passes of four tokens multiply: the first pass converts the fp16 scales and keeps them
    /// there, the later ones read them back instead of converting them again</param>
    /// <param name="first">whether this is the first pass over the group: it prefetches ahead of its reads (later
    /// passes find the group in L1/L2) and fills <paramref name="scales"/></param>
    public static void Four<TCodes>(byte* group, int blocks, QuantizedActivations a, int token, float* lanes, float* scales = null,
        bool first = true) where TCodes : struct, IByteTileCodes
    {
        if (a.Q.Length < (long)(token + 4) * blocks * 32 || a.D.Length < (token + 4) * blocks || a.BlockSum.Length < (token + 4) * blocks)
            ThrowHelper.TooShort(nameof(a), (long)(token + 4) * blocks * 32, a.Q.Length);
        float* partials = stackalloc float[4 * 8 * Rows];
        fixed (sbyte* q = a.Q) fixed (float* d = a.D) fixed (short* s = a.BlockSum)
            if (InShorts<TCodes>())
                FourKernelShorts<TCodes>(group, blocks, q + (long)token * blocks * 32, d + token * blocks, s + token * blocks, partials, lanes);
            else
                FourKernel<TCodes>(group, blocks, q + (long)token * blocks * 32, d + token * blocks, s + token * blocks, partials, lanes, scales, first);
    }

    /// <summary>Tiles ahead of the one multiplied that <see cref="FourKernel{TCodes}"/> prefetches (into the next group
    /// past a group's end): four tokens' arithmetic per tile leaves the hardware prefetcher behind. The one-token
    /// kernels prefetch only where <see cref="OnePrefetches"/> says: a line per column group twelve tiles ahead lowered Q8_0 decode's share of the read
    /// probe in each of six alternating pairs (Zen 5, v2-lite-8, one and two threads: 0.88 → 0.70, 0.90 → 0.80,
    /// 0.79 → 0.67 on one; 0.75 → 0.68, 0.73 → 0.68, 0.62 → 0.57 on two).</summary>
    private const int FourAhead = 8;

    /// <summary>Whether the one-token kernels (256- and 512-bit) prefetch <see cref="IByteTileCodes.Ahead"/> tiles ahead:
    /// on AMD Zen 3 (256-bit), where one-token Q8_0 products over 285 MB went 17.0–17.3 → 22.2–22.3 GB/s on one thread
    /// (72–75% → 94% of the read probe) and 24.2–30.0 → 35.5–35.7 on two (<c>bench stream Q8_0</c>, two runs each),
    /// costing 1–8% in cache; and on Intel, measured on a Xeon (family 6, model 207; AVX-512 and AVX-VNNI), where
    /// v2-lite-8 Q8_0 decode went 18.5 / 18.7 / 19.4 → 23.6 / 23.4 / 25.1 tok/s on two threads (79 / 86 / 73% → 93 / 94 /
    /// 91% of the read around each run) and 10.9 / 10.8 / 10.6 → 11.7 / 11.5 / 12.5 on one (<c>dss bench --read-bound</c>,
    /// <c>DSS_PREFETCH</c> 0 and 1 alternating). Zen 4 and Zen 5 keep the hardware prefetcher alone (Zen 5 lost with a
    /// line per column group twelve tiles ahead, above).</summary>
    internal static readonly bool OnePrefetches = CpuModel.Prefetch(CpuModel.IsZen3 || CpuModel.IsIntel);

    /// <summary>Four tokens (codes <c>32 · blocks</c> apart, scales and sums <c>blocks</c> apart): per token the float
    /// steps of <see cref="OneKernel{TCodes}"/> (partial b mod 8, <see cref="Reduce"/>, the tail one block at a time).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void FourKernel<TCodes>(byte* group, int blocks, sbyte* x, float* xd, short* xsum, float* partials, float* result,
        float* scales, bool first) where TCodes : struct, IByteTileCodes
    {
        int whole = blocks / 8 * 8, stride = blocks * 32;
        new Span<float>(partials, 4 * 8 * Rows).Clear();
        Vector256<float> r00 = default, r01 = default, r10 = default, r11 = default, r20 = default, r21 = default, r30 = default, r31 = default;
        for (int b = 0; b < blocks; b++, x += 32)
        {
            byte* t = group + (long)b * TCodes.TileBytes;
            if (first) PrefetchTile(t + FourAhead * TCodes.TileBytes, TCodes.TileBytes);
            Vector256<int> a0 = Vector256.Create(-TCodes.Bias * xsum[b]), a1 = a0;
            Vector256<int> b0 = Vector256.Create(-TCodes.Bias * xsum[blocks + b]), b1 = b0;
            Vector256<int> c0 = Vector256.Create(-TCodes.Bias * xsum[2 * blocks + b]), c1 = c0;
            Vector256<int> e0 = Vector256.Create(-TCodes.Bias * xsum[3 * blocks + b]), e1 = e0;
            for (int g = 0; g < 8; g++)
            {
                Group<TCodes>(t, g, out Vector256<byte> w0, out Vector256<byte> w1);
                Add<TCodes>(ref a0, ref a1, w0, w1, x + 4 * g); // |w| computed once for the four (the JIT shares it)
                Add<TCodes>(ref b0, ref b1, w0, w1, x + stride + 4 * g);
                Add<TCodes>(ref c0, ref c1, w0, w1, x + 2 * stride + 4 * g);
                Add<TCodes>(ref e0, ref e1, w0, w1, x + 3 * stride + 4 * g);
            }
            Vector256<float> ws0, ws1;
            if (first || scales == null)
            {
                (ws0, ws1) = (Scales(t, 0), Scales(t, 8));
                if (scales != null)
                {
                    ws0.Store(scales + 16 * b);
                    ws1.Store(scales + 16 * b + 8);
                }
            }
            else (ws0, ws1) = (Vector256.Load(scales + 16 * b), Vector256.Load(scales + 16 * b + 8));
            float d0 = xd[b], d1 = xd[blocks + b], d2 = xd[2 * blocks + b], d3 = xd[3 * blocks + b];
            if (b < whole)
            {
                int p = (b & 7) * 16;
                Fold(partials + p, a0, a1, ws0 * d0, ws1 * d0);
                Fold(partials + 128 + p, b0, b1, ws0 * d1, ws1 * d1);
                Fold(partials + 256 + p, c0, c1, ws0 * d2, ws1 * d2);
                Fold(partials + 384 + p, e0, e1, ws0 * d3, ws1 * d3);
                if (b + 1 == whole)
                {
                    Reduce(partials, out r00, out r01);
                    Reduce(partials + 128, out r10, out r11);
                    Reduce(partials + 256, out r20, out r21);
                    Reduce(partials + 384, out r30, out r31);
                }
            }
            else
            {
                Tail(ref r00, ref r01, a0, a1, ws0 * d0, ws1 * d0);
                Tail(ref r10, ref r11, b0, b1, ws0 * d1, ws1 * d1);
                Tail(ref r20, ref r21, c0, c1, ws0 * d2, ws1 * d2);
                Tail(ref r30, ref r31, e0, e1, ws0 * d3, ws1 * d3);
            }
        }
        r00.Store(result); r01.Store(result + 8);
        r10.Store(result + 16); r11.Store(result + 24);
        r20.Store(result + 32); r21.Store(result + 40);
        r30.Store(result + 48); r31.Store(result + 56);
    }

    /// <summary>A column group's codes <paramref name="w0"/> (rows 0–7), <paramref name="w1"/> (8–15) against a token's
    /// four codes at <paramref name="x"/>: one <c>vpdpbusd</c> per eight rows with AVX-VNNI; without it
    /// <c>vpmaddubsw</c> + <c>vpmaddwd</c>, on the codes as they are where they are small and biased (Q5_0: 31 · 127 · 2
    /// fits a 16-bit pair sum), else (Q8_0, stored signed without VNNI) on |w| against x with w's sign.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Add<TCodes>(ref Vector256<int> s0, ref Vector256<int> s1, Vector256<byte> w0, Vector256<byte> w1, sbyte* x)
        where TCodes : struct, IByteTileCodes
    {
        Vector256<sbyte> v = Vector256.Create(Unsafe.ReadUnaligned<int>(x)).AsSByte();
        if (AvxVnni.IsSupported || TCodes.Bias != 0)
        {
            s0 = IntDots.AddBytes4(s0, w0, v);
            s1 = IntDots.AddBytes4(s1, w1, v);
        }
        else
        {
            s0 += IntDots.Bytes4(Avx2.Abs(w0.AsSByte()), Avx2.Sign(v, w0.AsSByte()));
            s1 += IntDots.Bytes4(Avx2.Abs(w1.AsSByte()), Avx2.Sign(v, w1.AsSByte()));
        }
    }

    /// <summary><see cref="OneKernel{TCodes}"/> with the bookkeeping of a block in 512-bit registers (AVX-512): the
    /// sixteen scales widened in one go, the two row halves' sums joined into one vector, converted and fused into
    /// their partial at once. The products stay 256-bit <c>vpdpbusd</c>; every lane gets the same operations in the
    /// same order, so the results are the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void OneKernel512<TCodes>(byte* group, int blocks, sbyte* x, float* xd, short* xsum, float* partials, float* result)
        where TCodes : struct, IByteTileCodes
    {
        bool prefetch = OnePrefetches; // first and once, not in the loop (Q4KTiles.OneLookAhead)
        int whole = blocks / 8 * 8;
        new Span<float>(partials, 8 * Rows).Clear();
        Vector512<float> r = default;
        for (int b = 0; b < blocks; b++, x += 32)
        {
            byte* t = group + (long)b * TCodes.TileBytes;
            if (prefetch) PrefetchTile(t + TCodes.Ahead * TCodes.TileBytes, TCodes.TileBytes);
            BlockSums<TCodes>(t, x, xsum[b], out Vector256<int> s0, out Vector256<int> s1);
            Vector512<float> ws = HalfTable.ToSingle(Vector256.Load((ushort*)t)) * xd[b];
            Vector512<float> sums = Vector512.ConvertToSingle(Vector512.Create(s0, s1));
            if (b < whole)
            {
                float* p = partials + (b & 7) * 16;
                Vector512.FusedMultiplyAdd(sums, ws, Vector512.Load(p)).Store(p);
                if (b + 1 == whole)
                    r = ((Vector512.Load(partials) + Vector512.Load(partials + 64)) + (Vector512.Load(partials + 32) + Vector512.Load(partials + 96)))
                        + ((Vector512.Load(partials + 16) + Vector512.Load(partials + 80)) + (Vector512.Load(partials + 48) + Vector512.Load(partials + 112)));
            }
            else r += ws * sums;
        }
        r.Store(result);
    }

    /// <summary><see cref="FourKernel{TCodes}"/> where pair sums add up in int16 (<see cref="InShorts{TCodes}"/>): a
    /// block's rows 0–7, then 8–15 (<see cref="FourHalf{TCodes}"/>), each half's four int32 and four int16 sums in
    /// registers and folded into memory before the next (with both halves' sums live at once, and the halves'
    /// shared activation loads kept between them, the JIT spilled to the stack in every column group). Per row and
    /// token the same float steps as <see cref="FourKernel{TCodes}"/> (the halves are independent lanes), the tail
    /// added in <paramref name="result"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void FourKernelShorts<TCodes>(byte* group, int blocks, sbyte* x, float* xd, short* xsum, float* partials, float* result)
        where TCodes : struct, IByteTileCodes
    {
        int whole = blocks / 8 * 8;
        new Span<float>(partials, 4 * 8 * Rows).Clear();
        new Span<float>(result, 4 * Rows).Clear();
        for (int b = 0; b < blocks; b++, x += 32)
        {
            byte* t = group + (long)b * TCodes.TileBytes;
            PrefetchTile(t + FourAhead * TCodes.TileBytes, TCodes.TileBytes);
            FourHalf<TCodes>(t, b, blocks, whole, x, xd, xsum, partials, result, 0);
            FourHalf<TCodes>(t, b, blocks, whole, x, xd, xsum, partials, result, 1);
            if (b + 1 == whole)
                for (int k = 0; k < 4; k++)
                {
                    Reduce(partials + 128 * k, out Vector256<float> r0, out Vector256<float> r1);
                    r0.Store(result + 16 * k);
                    r1.Store(result + 16 * k + 8);
                }
        }
    }

    /// <summary>Rows 8·<paramref name="half"/> .. + 7 of block <paramref name="b"/>'s tile against four tokens (codes
    /// 32 · <paramref name="blocks"/> apart), from −Bias · Σx, per token four column groups added in int16 and widened
    /// once, twice; then fused into the token's partial b mod 8 (<see cref="Fold"/>'s half) or, past the last whole
    /// eight, added to its result (<see cref="Tail"/>'s). <paramref name="half"/> is a literal, so the JIT keeps only
    /// that half's unpacking.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FourHalf<TCodes>(byte* t, int b, int blocks, int whole, sbyte* x, float* xd, short* xsum, float* partials, float* result, int half)
        where TCodes : struct, IByteTileCodes
    {
        int stride = blocks * 32;
        Vector256<int> s0 = Vector256.Create(-TCodes.Bias * xsum[b]), s1 = Vector256.Create(-TCodes.Bias * xsum[blocks + b]);
        Vector256<int> s2 = Vector256.Create(-TCodes.Bias * xsum[2 * blocks + b]), s3 = Vector256.Create(-TCodes.Bias * xsum[3 * blocks + b]);
        FourQuad<TCodes>(t, x, stride, half, 0, ref s0, ref s1, ref s2, ref s3);
        FourQuad<TCodes>(t, x, stride, half, 4, ref s0, ref s1, ref s2, ref s3);
        Vector256<float> ws = Scales(t, 8 * half);
        Vector256<float> w0 = ws * xd[b], w1 = ws * xd[blocks + b], w2 = ws * xd[2 * blocks + b], w3 = ws * xd[3 * blocks + b];
        if (b < whole)
        {
            float* p = partials + (b & 7) * 16 + 8 * half; // token k's partials 128 floats apart
            FoldHalf(p, s0, w0);
            FoldHalf(p + 128, s1, w1);
            FoldHalf(p + 256, s2, w2);
            FoldHalf(p + 384, s3, w3);
        }
        else
        {
            float* r = result + 8 * half; // token k's results 16 floats apart
            TailHalf(r, s0, w0);
            TailHalf(r + 16, s1, w1);
            TailHalf(r + 32, s2, w2);
            TailHalf(r + 48, s3, w3);
        }
    }

    /// <summary>Column groups g .. g + 3 of <see cref="FourHalf{TCodes}"/>, written out (see <see cref="Quad{TCodes}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FourQuad<TCodes>(byte* t, sbyte* x, int stride, int half, int g,
        ref Vector256<int> a, ref Vector256<int> b, ref Vector256<int> c, ref Vector256<int> e) where TCodes : struct, IByteTileCodes
    {
        Vector256<short> pa = default, pb = default, pc = default, pe = default;
        FourPairs<TCodes>(t, x, stride, half, g, ref pa, ref pb, ref pc, ref pe);
        FourPairs<TCodes>(t, x, stride, half, g + 1, ref pa, ref pb, ref pc, ref pe);
        FourPairs<TCodes>(t, x, stride, half, g + 2, ref pa, ref pb, ref pc, ref pe);
        FourPairs<TCodes>(t, x, stride, half, g + 3, ref pa, ref pb, ref pc, ref pe);
        Vector256<short> ones = Vector256.Create((short)1);
        a += Avx2.MultiplyAddAdjacent(pa, ones);
        b += Avx2.MultiplyAddAdjacent(pb, ones);
        c += Avx2.MultiplyAddAdjacent(pc, ones);
        e += Avx2.MultiplyAddAdjacent(pe, ones);
    }

    /// <summary>Column group g's half against four tokens' codes there, each token's pair sums added in int16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FourPairs<TCodes>(byte* t, sbyte* x, int stride, int half, int g,
        ref Vector256<short> pa, ref Vector256<short> pb, ref Vector256<short> pc, ref Vector256<short> pe) where TCodes : struct, IByteTileCodes
    {
        Vector256<byte> w = TCodes.Half(t, g, half);
        sbyte* xg = x + 4 * g;
        pa += Avx2.MultiplyAddAdjacent(w, Vector256.Create(Unsafe.ReadUnaligned<int>(xg)).AsSByte());
        pb += Avx2.MultiplyAddAdjacent(w, Vector256.Create(Unsafe.ReadUnaligned<int>(xg + stride)).AsSByte());
        pc += Avx2.MultiplyAddAdjacent(w, Vector256.Create(Unsafe.ReadUnaligned<int>(xg + 2 * stride)).AsSByte());
        pe += Avx2.MultiplyAddAdjacent(w, Vector256.Create(Unsafe.ReadUnaligned<int>(xg + 3 * stride)).AsSByte());
    }

    /// <summary>One token: block b's sixteen exact sums (from −Bias · Σx, two chains of eight <c>vpdpbusd</c>), scaled
    /// by d_w · d_x and fused into partial b mod 8 (<paramref name="partials"/>, 128 floats), as
    /// <see cref="BlockGemm{T}.MultiplyBytes"/> does for each of its tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)] // compiled optimised at once, on its own (see Q4KTiles)
    private static void OneKernel<TCodes>(byte* group, int blocks, sbyte* x, float* xd, short* xsum, float* partials, float* result)
        where TCodes : struct, IByteTileCodes
    {
        bool prefetch = OnePrefetches; // first and once, not in the loop (Q4KTiles.OneLookAhead)
        int whole = blocks / 8 * 8;
        new Span<float>(partials, 8 * Rows).Clear();
        Vector256<float> r0 = default, r1 = default;
        for (int b = 0; b < blocks; b++, x += 32)
        {
            byte* t = group + (long)b * TCodes.TileBytes;
            if (prefetch) PrefetchTile(t + TCodes.Ahead * TCodes.TileBytes, TCodes.TileBytes);
            BlockSums<TCodes>(t, x, xsum[b], out Vector256<int> s0, out Vector256<int> s1);
            Vector256<float> ws0 = Scales(t, 0) * xd[b], ws1 = Scales(t, 8) * xd[b];
            if (b < whole)
            {
                Fold(partials + (b & 7) * 16, s0, s1, ws0, ws1);
                if (b + 1 == whole) Reduce(partials, out r0, out r1);
            }
            else Tail(ref r0, ref r1, s0, s1, ws0, ws1); // the last blocks one at a time, as BlockDots.V256 adds them
        }
        r0.Store(result);
        r1.Store(result + 8);
    }

    /// <summary>A token's block sums of rows 0–7 (<paramref name="s0"/>) and 8–15, times the rows' scales already
    /// multiplied by the token's (<paramref name="ws0"/>, <paramref name="ws1"/>), fused into the partial sums at
    /// <paramref name="p"/> (sixteen floats: partial b mod 8 of <see cref="BlockDots{T}.V256"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Fold(float* p, Vector256<int> s0, Vector256<int> s1, Vector256<float> ws0, Vector256<float> ws1)
    {
        FoldHalf(p, s0, ws0);
        FoldHalf(p + 8, s1, ws1);
    }

    /// <summary>One half of <see cref="Fold"/>: eight rows' sums at <paramref name="p"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FoldHalf(float* p, Vector256<int> s, Vector256<float> ws) =>
        Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(s), ws, Vector256.Load(p)).Store(p);

    /// <summary>The eight partials at <paramref name="p"/> (128 floats) added in <see cref="BlockDots{T}.Reduce8"/>'s
    /// order: rows 0–7 in <paramref name="r0"/>, 8–15 in <paramref name="r1"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Reduce(float* p, out Vector256<float> r0, out Vector256<float> r1)
    {
        r0 = ((Vector256.Load(p) + Vector256.Load(p + 64)) + (Vector256.Load(p + 32) + Vector256.Load(p + 96)))
             + ((Vector256.Load(p + 16) + Vector256.Load(p + 80)) + (Vector256.Load(p + 48) + Vector256.Load(p + 112)));
        r1 = ((Vector256.Load(p + 8) + Vector256.Load(p + 72)) + (Vector256.Load(p + 40) + Vector256.Load(p + 104)))
             + ((Vector256.Load(p + 24) + Vector256.Load(p + 88)) + (Vector256.Load(p + 56) + Vector256.Load(p + 120)));
    }

    /// <summary>A block past the last whole eight added on its own (scales as in <see cref="Fold"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Tail(ref Vector256<float> r0, ref Vector256<float> r1, Vector256<int> s0, Vector256<int> s1,
        Vector256<float> ws0, Vector256<float> ws1)
    {
        r0 += ws0 * Vector256.ConvertToSingle(s0);
        r1 += ws1 * Vector256.ConvertToSingle(s1);
    }

    /// <summary>One half of <see cref="Tail"/> on eight rows' results kept at <paramref name="r"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TailHalf(float* r, Vector256<int> s, Vector256<float> ws) =>
        (Vector256.Load(r) + ws * Vector256.ConvertToSingle(s)).Store(r);

    /// <summary>Tokens per pass of <see cref="Multiply{TCodes}"/>.</summary>
    public const int TokensPerPass = 6;

    /// <summary>Tokens past n that <see cref="Multiply{TCodes}"/> reads (its last pass of six runs whole).</summary>
    public const int TokenPadding = TokensPerPass - 1;

    /// <summary>Many tokens against a group of <typeparamref name="TCodes"/> tiles on CPUs with AVX-512 but no VNNI,
    /// straight from the tiles: a column group's 64 codes widen to int16 in two registers (rows 0–7, 8–15; row r's
    /// four codes in lanes 4r..4r + 3), each token's four int16 codes there are broadcast as one 64-bit value, and
    /// vpmaddwd leaves row r's two column pairs in int32 lanes 2r and 2r + 1; at the block's end two permutes add each
    /// row's pair into lane r. Six tokens a pass share every widened group. The sums are exact, and the float steps per
    /// row and token are <see cref="BlockDots{T}.V256"/>'s (block b fused into partial b mod 8, the partials added in
    /// <see cref="BlockDots{T}.Reduce8"/>'s order, the last blocks one at a time), so results are the one-token
    /// kernel's bits. y[t · yStride + j] for rows j &lt; <paramref name="rows"/> and tokens [0, n); <paramref name="x16"/>
    /// [n, blocks · 32] codes as int16, <paramref name="xd"/> scales and <paramref name="xsum"/> block sums, each
    /// readable <see cref="TokenPadding"/> tokens past n; <paramref name="partials"/> 768 floats of scratch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Multiply<TCodes>(byte* group, int blocks, int rows, short* x16, float* xd, short* xsum, int n,
        float* partials, float* y, long yStride, bool prefetch = false) where TCodes : struct, IByteTileCodes
    {
        int cols = blocks * 32, whole = blocks / 8 * 8;
        Vector512<int> even = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        Vector512<int> odd = even + Vector512<int>.One;
        for (int t0 = 0; t0 < n; t0 += TokensPerPass)
        {
            short* x = x16 + (long)t0 * cols;
            float* d0 = xd + (long)t0 * blocks, d1 = d0 + blocks, d2 = d1 + blocks, d3 = d2 + blocks, d4 = d3 + blocks, d5 = d4 + blocks;
            short* u = xsum + (long)t0 * blocks;
            // Step k < whole is block b = j + 8i of partial j = k / per: partial j of the six tokens stays in p0..p5 over
            // its blocks in order (as BlockDots.V256 fuses them) and is stored when done; after the last, p0..p5 take the
            // reduced partials and the blocks past the last whole eight are added one at a time.
            Vector512<float> p0 = default, p1 = default, p2 = default, p3 = default, p4 = default, p5 = default;
            for (int k = 0, j = 0, b = 0; k < blocks; k++)
            {
                byte* tile = group + (long)b * TCodes.TileBytes;
                short* xb = x + b * 32;
                if (prefetch && t0 == 0) PrefetchTile(group + (long)(blocks + k) * TCodes.TileBytes, TCodes.TileBytes);
                Vector512<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default;
                Vector512<int> e0 = default, e1 = default, e2 = default, e3 = default, e4 = default, e5 = default;
                for (int g = 0; g < 8; g++)
                {
                    Group<TCodes>(tile, g, out Vector256<byte> rows0, out Vector256<byte> rows8);
                    Vector512<short> lo = WidenCodes<TCodes>(rows0), hi = WidenCodes<TCodes>(rows8);
                    // The six broadcasts, then the twelve products, then the adds, each in its own register (see
                    // PanelPack.AddSums).
                    short* xg = xb + 4 * g;
                    Vector512<short> c0 = Vector512.Create(*(long*)xg).AsInt16(), c1 = Vector512.Create(*(long*)(xg + cols)).AsInt16();
                    Vector512<short> c2 = Vector512.Create(*(long*)(xg + 2 * cols)).AsInt16(), c3 = Vector512.Create(*(long*)(xg + 3 * cols)).AsInt16();
                    Vector512<short> c4 = Vector512.Create(*(long*)(xg + 4 * cols)).AsInt16(), c5 = Vector512.Create(*(long*)(xg + 5 * cols)).AsInt16();
                    Vector512<int> m0 = Avx512BW.MultiplyAddAdjacent(lo, c0), n0 = Avx512BW.MultiplyAddAdjacent(hi, c0);
                    Vector512<int> m1 = Avx512BW.MultiplyAddAdjacent(lo, c1), n1 = Avx512BW.MultiplyAddAdjacent(hi, c1);
                    Vector512<int> m2 = Avx512BW.MultiplyAddAdjacent(lo, c2), n2 = Avx512BW.MultiplyAddAdjacent(hi, c2);
                    Vector512<int> m3 = Avx512BW.MultiplyAddAdjacent(lo, c3), n3 = Avx512BW.MultiplyAddAdjacent(hi, c3);
                    Vector512<int> m4 = Avx512BW.MultiplyAddAdjacent(lo, c4), n4 = Avx512BW.MultiplyAddAdjacent(hi, c4);
                    Vector512<int> m5 = Avx512BW.MultiplyAddAdjacent(lo, c5), n5 = Avx512BW.MultiplyAddAdjacent(hi, c5);
                    a0 += m0; e0 += n0; a1 += m1; e1 += n1; a2 += m2; e2 += n2;
                    a3 += m3; e3 += n3; a4 += m4; e4 += n4; a5 += m5; e5 += n5;
                }
                Vector512<float> s0 = Vector512.ConvertToSingle(Combine<TCodes>(a0, e0, even, odd, u[b]));
                Vector512<float> s1 = Vector512.ConvertToSingle(Combine<TCodes>(a1, e1, even, odd, u[blocks + b]));
                Vector512<float> s2 = Vector512.ConvertToSingle(Combine<TCodes>(a2, e2, even, odd, u[2 * blocks + b]));
                Vector512<float> s3 = Vector512.ConvertToSingle(Combine<TCodes>(a3, e3, even, odd, u[3 * blocks + b]));
                Vector512<float> s4 = Vector512.ConvertToSingle(Combine<TCodes>(a4, e4, even, odd, u[4 * blocks + b]));
                Vector512<float> s5 = Vector512.ConvertToSingle(Combine<TCodes>(a5, e5, even, odd, u[5 * blocks + b]));
                Vector512<float> ws = HalfTable.ToSingle(Vector256.Load((ushort*)tile));
                if (k < whole)
                {
                    p0 = Vector512.FusedMultiplyAdd(s0, ws * d0[b], p0);
                    p1 = Vector512.FusedMultiplyAdd(s1, ws * d1[b], p1);
                    p2 = Vector512.FusedMultiplyAdd(s2, ws * d2[b], p2);
                    p3 = Vector512.FusedMultiplyAdd(s3, ws * d3[b], p3);
                    p4 = Vector512.FusedMultiplyAdd(s4, ws * d4[b], p4);
                    p5 = Vector512.FusedMultiplyAdd(s5, ws * d5[b], p5);
                    if (b + 8 >= whole)
                    {
                        PanelPack.StorePartial(partials, j, p0, p1, p2, p3, p4, p5);
                        if (j == 7) PanelPack.ReducePass(partials, out p0, out p1, out p2, out p3, out p4, out p5);
                        else p0 = p1 = p2 = p3 = p4 = p5 = default;
                        j++;
                        b = j == 8 ? whole : j;
                    }
                    else b += 8;
                }
                else
                {
                    p0 += ws * d0[b] * s0;
                    p1 += ws * d1[b] * s1;
                    p2 += ws * d2[b] * s2;
                    p3 += ws * d3[b] * s3;
                    p4 += ws * d4[b] * s4;
                    p5 += ws * d5[b] * s5;
                    b++;
                }
            }
            PanelPack.StorePass(p0, p1, p2, p3, p4, p5, y + t0 * yStride, yStride, n - t0, rows);
        }
    }

    /// <summary>Every line of a tile of <paramref name="bytes"/> bytes at <paramref name="p"/> into the caches (a tile
    /// starts anywhere in a line).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchTile(byte* p, int bytes)
    {
        for (int i = 0; i < bytes + 63; i += 64) Sse.Prefetch0(p + i);
    }

    /// <summary>Row r's two column-pair sums (lanes 2r, 2r + 1 of <paramref name="lo"/> for rows 0–7, of
    /// <paramref name="hi"/> for 8–15) added into lane r, less Bias · Σx.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Combine<TCodes>(Vector512<int> lo, Vector512<int> hi, Vector512<int> even, Vector512<int> odd, short xsum)
        where TCodes : struct, IByteTileCodes
    {
        Vector512<int> sum = Avx512F.PermuteVar16x32x2(lo, even, hi) + Avx512F.PermuteVar16x32x2(lo, odd, hi);
        return TCodes.Bias == 0 ? sum : sum - Vector512.Create(TCodes.Bias * xsum);
    }

    /// <summary>Thirty-two stored codes as int16: sign-extended where they are kept signed, else zero-extended (the
    /// bias comes off the sums).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> WidenCodes<TCodes>(Vector256<byte> codes) where TCodes : struct, IByteTileCodes =>
        TCodes.Bias == 0 ? Avx512BW.ConvertToVector512Int16(codes.AsSByte()) : Avx512BW.ConvertToVector512UInt16(codes).AsInt16();

    /// <summary>The group of <typeparamref name="TCodes"/> tiles at <paramref name="group"/> as an int16 panel of
    /// <see cref="BlockGemm{T}.Multiply"/> (AVX-512 without VNNI): per block, the sixteen scales as floats into
    /// <paramref name="scales"/> [blocks, 16], and the codes − Bias, widened, into <paramref name="panel"/> [blocks, 16
    /// column pairs, 16 rows, 2]. A column group's eight-row halves widen to pairs (row r, columns 4g + 2k, + 1) at
    /// 32-bit lane 2r + k, so two two-source permutes make the group's two column pairs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackShorts<TCodes>(byte* group, int blocks, Span<short> panel, Span<float> scales) where TCodes : struct, IByteTileCodes
    {
        if (panel.Length < blocks * 512 || scales.Length < blocks * 16) ThrowHelper.TooShort(nameof(panel), blocks * 512, panel.Length);
        Vector512<int> even = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        Vector512<int> odd = even + Vector512<int>.One;
        fixed (short* pp = panel) fixed (float* ps = scales)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* t = group + (long)b * TCodes.TileBytes;
                HalfTable.ToSingle(Vector256.Load((ushort*)t)).Store(ps + b * 16);
                short* o = pp + b * 512;
                for (int g = 0; g < 8; g++)
                {
                    Group<TCodes>(t, g, out Vector256<byte> rows0, out Vector256<byte> rows8);
                    Vector512<int> lo = Widen<TCodes>(rows0), hi = Widen<TCodes>(rows8);
                    Avx512F.PermuteVar16x32x2(lo, even, hi).AsInt16().Store(o + 64 * g);
                    Avx512F.PermuteVar16x32x2(lo, odd, hi).AsInt16().Store(o + 64 * g + 32);
                }
            }
        }
    }

    /// <summary>Thirty-two stored codes as int16 codes (<see cref="WidenCodes{TCodes}"/> less the bias).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Widen<TCodes>(Vector256<byte> codes) where TCodes : struct, IByteTileCodes =>
        TCodes.Bias == 0 ? WidenCodes<TCodes>(codes).AsInt32() : (WidenCodes<TCodes>(codes) - Vector512.Create((short)TCodes.Bias)).AsInt32();

    /// <summary>A tile's sixteen exact block sums against a token's 32 codes at <paramref name="x"/> (their sum
    /// <paramref name="xsum"/>): rows 0–7 in <paramref name="s0"/>, 8–15 in <paramref name="s1"/>, each from
    /// −Bias · Σx through a chain of eight <c>vpdpbusd</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BlockSums<TCodes>(byte* t, sbyte* x, short xsum, out Vector256<int> s0, out Vector256<int> s1) where TCodes : struct, IByteTileCodes
    {
        s0 = Vector256.Create(-TCodes.Bias * xsum);
        s1 = s0;
        if (InShorts<TCodes>())
        {
            Quad<TCodes>(ref s0, ref s1, t, x, 0);
            Quad<TCodes>(ref s0, ref s1, t, x, 4);
            return;
        }
        // The eight column groups written out: as a loop, each load saw a stride that broke every eighth step.
        Step<TCodes>(ref s0, ref s1, t, x, 0);
        Step<TCodes>(ref s0, ref s1, t, x, 1);
        Step<TCodes>(ref s0, ref s1, t, x, 2);
        Step<TCodes>(ref s0, ref s1, t, x, 3);
        Step<TCodes>(ref s0, ref s1, t, x, 4);
        Step<TCodes>(ref s0, ref s1, t, x, 5);
        Step<TCodes>(ref s0, ref s1, t, x, 6);
        Step<TCodes>(ref s0, ref s1, t, x, 7);
    }

    /// <summary>Half <paramref name="half"/> (rows 0–7 or 8–15) of column group g of a byte tile, stored as it is
    /// multiplied: one load.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> Stored(byte* tile, int g, int half) => Vector256.Load(tile + ScaleBytes + 64 * g + 32 * half);

    /// <summary>Column group g of a <typeparamref name="TCodes"/> tile: rows 0–7 in <paramref name="rows0"/>, 8–15 in
    /// <paramref name="rows8"/> (<see cref="IByteTileCodes.Half"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Group<TCodes>(byte* tile, int g, out Vector256<byte> rows0, out Vector256<byte> rows8) where TCodes : struct, IByteTileCodes
    {
        rows0 = TCodes.Half(tile, g, 0);
        rows8 = TCodes.Half(tile, g, 1);
    }

    /// <summary>Whether, without AVX-VNNI, four column groups' <c>vpmaddubsw</c> pair sums add up in int16 before one
    /// <c>vpmaddwd</c> widens them: small unsigned codes (Q5_0's 0–31: 4 · 2 · 31 · 128 = 31,744 ≤ 32,767, activations
    /// being −128..127). Five multiplications per four groups instead of eight; the sums are exact either way, so the
    /// same bits. A constant to the JIT.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool InShorts<TCodes>() where TCodes : struct, IByteTileCodes =>
        !AvxVnni.IsSupported && TCodes.Bias != 0 && 4 * 2 * TCodes.MaxCode * 128 <= short.MaxValue;

    /// <summary>Column groups g .. g + 3 of a tile against the token's codes there, their pair sums added in int16
    /// (<see cref="InShorts{TCodes}"/>) and widened once into <paramref name="s0"/> (rows 0–7) and <paramref name="s1"/>.
    /// Written out, with g a literal: a group's unpacking takes immediate shifts only where its number is a constant.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quad<TCodes>(ref Vector256<int> s0, ref Vector256<int> s1, byte* tile, sbyte* x, int g) where TCodes : struct, IByteTileCodes
    {
        Vector256<short> p0 = default, p1 = default;
        Pairs<TCodes>(ref p0, ref p1, tile, x, g);
        Pairs<TCodes>(ref p0, ref p1, tile, x, g + 1);
        Pairs<TCodes>(ref p0, ref p1, tile, x, g + 2);
        Pairs<TCodes>(ref p0, ref p1, tile, x, g + 3);
        Vector256<short> ones = Vector256.Create((short)1);
        s0 += Avx2.MultiplyAddAdjacent(p0, ones);
        s1 += Avx2.MultiplyAddAdjacent(p1, ones);
    }

    /// <summary>Column group g's pair sums against the token's four codes there, added to <paramref name="p0"/> (rows
    /// 0–7) and <paramref name="p1"/> in int16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Pairs<TCodes>(ref Vector256<short> p0, ref Vector256<short> p1, byte* tile, sbyte* x, int g) where TCodes : struct, IByteTileCodes
    {
        Vector256<sbyte> v = Vector256.Create(Unsafe.ReadUnaligned<int>(x + 4 * g)).AsSByte();
        p0 += Avx2.MultiplyAddAdjacent(TCodes.Half(tile, g, 0), v);
        p1 += Avx2.MultiplyAddAdjacent(TCodes.Half(tile, g, 1), v);
    }

    /// <summary>Column group g of a tile (four columns of the sixteen rows) against the token's four codes there
    /// (<see cref="Add{TCodes}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step<TCodes>(ref Vector256<int> s0, ref Vector256<int> s1, byte* tile, sbyte* x, int g) where TCodes : struct, IByteTileCodes
    {
        Group<TCodes>(tile, g, out Vector256<byte> w0, out Vector256<byte> w1);
        Add<TCodes>(ref s0, ref s1, w0, w1, x + 4 * g);
    }
}

/// <summary>How a tile layout holds a row's GGUF blocks: <see cref="SetRow"/> writes row r (0..15) of a group, <see
/// cref="GetRow"/> gives the same bytes back.</summary>
internal unsafe interface ITileRows
{
    static abstract void SetRow(ReadOnlySpan<byte> row, byte* group, int r);
    static abstract void GetRow(byte* group, int r, Span<byte> row);
}

/// <summary>A format kept in tiles from which <see cref="ByteTiles"/>' column groups come: as stored (Q8_0), or
/// unpacked in registers (Q5_0).</summary>
internal unsafe interface IByteTileCodes
{
    /// <summary>Bytes of one tile (a block of 32 columns of sixteen rows), the sixteen fp16 scales first.</summary>
    static abstract int TileBytes { get; }

    /// <summary>What was added to each code to make it an unsigned byte.</summary>
    static abstract int Bias { get; }

    /// <summary>The largest stored code <c>vpmaddubsw</c> multiplies (the absolute value where signed codes take the
    /// sign trick): it bounds how many column groups' pair sums add up exactly in int16 (<see cref="ByteTiles"/>'
    /// <c>InShorts</c>).</summary>
    static abstract int MaxCode { get; }

    /// <summary>Tiles ahead of the one multiplied that the one-token kernels prefetch where
    /// <see cref="ByteTiles.OnePrefetches"/>: about as many bytes for every format (a few more for the one that
    /// spends longer on each byte).</summary>
    static abstract int Ahead { get; }

    /// <summary>Rows 8·<paramref name="half"/> .. + 7 of column group g (0..7) of the tile at <paramref name="tile"/>
    /// as <see cref="ByteTiles"/> holds them: byte 4r + i is row 8·half + r's biased code of column 4g + i. Returned
    /// as a value (the kernels that keep many sums in registers: <c>out</c> vectors went through the stack there);
    /// <see cref="ByteTiles.Group{TCodes}"/> takes both halves.</summary>
    static abstract Vector256<byte> Half(byte* tile, int g, int half);
}

/// <summary>Q8_0 kept as <see cref="ByteTiles"/> (AVX2): a matrix of sixteen-row groups, each group its blocks' tiles
/// in column order. The one-token kernel (<see cref="One"/>) reads a group front to back with two <c>vpdpbusd</c> per
/// 64 bytes (without VNNI two each of abs, sign, <c>vpmaddubsw</c> and <c>vpmaddwd</c>: a file-layout block also pays a
/// reduction tree and its scale's own loads, 1.5× the time in cache); more tokens take
/// <see cref="BlockGemm{T}.MultiplyBytes"/> on the same memory, or int16 panels packed from it. The arithmetic is
/// <see cref="BlockDots{T}.V256"/>'s for every row and token (exact block sums; partial sums b mod 8 fused, added in
/// <see cref="BlockDots{T}.Reduce8"/>'s order, the last blocks one by one), so results are the same bits as the file
/// layout's kernels.</summary>
internal static unsafe class Q8Tiles
{
    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>What a stored code is xored with: 0x80 in every byte where <c>vpdpbusd</c> multiplies codes + 128
    /// (AVX-VNNI), else nothing (the codes are kept signed for <c>vpmaddubsw</c>'s sign trick). A constant to the JIT.</summary>
    private static uint Flip
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => AvxVnni.IsSupported ? 0x80808080u : 0;
    }

    /// <summary>Writes row <paramref name="r"/> (0..15) of the group at <paramref name="group"/> from its GGUF blocks.
    /// Rows of one group touch disjoint bytes, so rows can be written from several threads.</summary>
    public static void SetRow(ReadOnlySpan<BlockQ8_0> row, byte* group, int r)
    {
        for (int b = 0; b < row.Length; b++)
        {
            byte* t = group + (long)b * ByteTiles.BlockBytes;
            ref readonly BlockQ8_0 blk = ref row[b];
            ((ushort*)t)[r] = blk.D;
            ref byte qs = ref Unsafe.As<BlockQ8_0.Codes, byte>(ref Unsafe.AsRef(in blk.Qs));
            for (int g = 0; g < 8; g++)
                *(uint*)(t + ByteTiles.ScaleBytes + 64 * g + 4 * r) = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref qs, 4 * g)) ^ Flip;
        }
    }

    /// <summary>Row <paramref name="r"/> of the group as GGUF blocks (the exact inverse of <see cref="SetRow"/>).</summary>
    public static void GetRow(byte* group, int r, Span<BlockQ8_0> row)
    {
        for (int b = 0; b < row.Length; b++)
        {
            byte* t = group + (long)b * ByteTiles.BlockBytes;
            ref BlockQ8_0 blk = ref row[b];
            blk.D = ((ushort*)t)[r];
            ref byte qs = ref Unsafe.As<BlockQ8_0.Codes, byte>(ref blk.Qs);
            for (int g = 0; g < 8; g++)
                Unsafe.WriteUnaligned(ref Unsafe.Add(ref qs, 4 * g), *(uint*)(t + ByteTiles.ScaleBytes + 64 * g + 4 * r) ^ Flip);
        }
    }

    /// <summary>Token <paramref name="token"/> of <paramref name="a"/> (quantised per 32) against the sixteen rows of
    /// the group at <paramref name="group"/>: row r's result in <paramref name="lanes"/>[r].</summary>
    public static void One(byte* group, int blocks, QuantizedActivations a, int token, float* lanes) =>
        ByteTiles.One<Q8Tiles.Codes>(group, blocks, a, token, lanes);

    /// <summary>A tile's column group g is stored as it is multiplied: two loads.</summary>
    internal readonly struct Codes : IByteTileCodes
    {
        public static int TileBytes => ByteTiles.BlockBytes;
        public static int Bias => AvxVnni.IsSupported ? 128 : 0;
        public static int MaxCode => AvxVnni.IsSupported ? 255 : 127;

        /// <summary>Four (2,176 bytes): one-token products over 294 MB of [2048, 1408] matrices on Zen 3 read 71–83%
        /// of the probe without the look-ahead, 91–97% four tiles ahead and 84–93% six, eight or twelve (<c>bench
        /// stream</c>, the distances alternating pass by pass in one process, one and two threads, two runs).</summary>
        public static int Ahead => 4;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Half(byte* tile, int g, int half) => ByteTiles.Stored(tile, g, half);
    }
}
