using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Many tokens against a matrix of <typeparamref name="T"/> blocks (prefill, large batches) with AVX-512.
/// Sixteen weight rows are unpacked once into a panel of int16 codes laid out so that one 512-bit vector holds the
/// same two columns of all sixteen rows; each token's column pair is broadcast and multiplied by vpmaddwd (six tokens a pass), so a
/// vector lane accumulates one row's exact int32 block sum with no horizontal reduction. The unpacking (widen,
/// 16×16 transpose) is paid once per panel and shared by every token.
/// <para>The float arithmetic per row and token is exactly <see cref="BlockDots{T}.V256"/>'s: block b's sum is
/// scaled by d_w·d_x and fused into partial sum b mod 8 for the whole eights of blocks, the eight partials are added
/// in <see cref="BlockDots{T}.Reduce8"/>'s order, and the last blocks are added one at a time. So a token's result
/// does not depend on how many tokens are computed with it (tested bit for bit).</para></summary>
internal static class BlockGemm<T> where T : struct, IBlockCodes
{
    public const int PanelRows = 16;
    internal const int TokensPerPass = 6;

    public static bool IsSupported => Avx512BW.IsSupported;

    /// <summary>Unpacks rows [0, <paramref name="rows"/>) (at most 16, <paramref name="rowBytes"/> apart) into
    /// <paramref name="panel"/> [blocks, 16 column pairs, 16 rows, 2] and their scales into
    /// <paramref name="scales"/> [blocks, 16 rows]; missing rows are zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pack(ref byte w, long rowBytes, int rows, int blocks, Span<short> panel, Span<float> scales)
    {
        if (scales.Length < blocks * 16) ThrowHelper.TooShort(nameof(scales), blocks * 16, scales.Length);
        PanelPack.Codes<BlockRows<T>>(ref w, rowBytes, rows, blocks, panel);
        // The sixteen rows' fp16 scales of a block converted together in registers (missing rows: +0, so 0f).
        Span<ushort> halves = stackalloc ushort[PanelRows];
        halves.Clear();
        ref float sc = ref MemoryMarshal.GetReference(scales);
        for (int b = 0; b < blocks; b++)
        {
            for (int j = 0; j < rows; j++)
                halves[j] = Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref w, (nint)(j * rowBytes + b * T.Bytes)));
            HalfTable.ToSingle(Vector256.Create<ushort>(halves)).StoreUnsafe(ref sc, (nuint)(b * 16));
        }
    }

    /// <summary>y[t · yStride + j] = row j · token t for the panel's first <paramref name="rows"/> rows and tokens
    /// [0, n): <paramref name="x16"/> [n, blocks · 32] codes widened to int16 and <paramref name="xd"/> [n, blocks]
    /// scales, each readable (any values) up to <see cref="TokenPadding"/> tokens past n; <paramref name="partials"/>
    /// is scratch of at least <see cref="PartialsLength"/> floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Multiply(ReadOnlySpan<short> panel, ReadOnlySpan<float> scales, int blocks, int rows,
        ReadOnlySpan<short> x16, ReadOnlySpan<float> xd, int n, Span<float> partials, float* y, long yStride)
    {
        int cols = blocks * 32, padded = (n + TokenPadding) / TokensPerPass * TokensPerPass;
        if (panel.Length < blocks * 512 || scales.Length < blocks * 16 || x16.Length < padded * cols || xd.Length < padded * blocks || partials.Length < PartialsLength)
            ThrowHelper.TooShort(nameof(x16), padded * cols, x16.Length);
        int whole = blocks / 8 * 8;
        nint stride = cols * sizeof(short);
        Span<float> lane = stackalloc float[PanelRows];
        fixed (short* pw = panel, xq = x16)
        fixed (float* ps = scales, part = partials, xs = xd)
        {
            for (int t0 = 0; t0 < n; t0 += TokensPerPass)
            {
                // A short last pass runs on the padding tokens and stores only the real ones.
                byte* x = (byte*)(xq + (long)t0 * cols);
                float* d0 = xs + (long)t0 * blocks, d1 = d0 + blocks, d2 = d1 + blocks, d3 = d2 + blocks, d4 = d3 + blocks, d5 = d4 + blocks;
                new Span<float>(part, PartialsLength).Clear();
                int b = 0;
                for (; b < whole; b++)
                {
                    Vector512<int> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default;
                    PanelPack.AddSums(pw + b * 512, x + b * 64, stride, ref s0, ref s1, ref s2, ref s3, ref s4, ref s5);
                    Vector512<float> ws = Vector512.Load(ps + b * 16);
                    float* p = part + (b & 7) * 16;
                    Fold(p, s0, ws * d0[b]);
                    Fold(p + 128, s1, ws * d1[b]);
                    Fold(p + 256, s2, ws * d2[b]);
                    Fold(p + 384, s3, ws * d3[b]);
                    Fold(p + 512, s4, ws * d4[b]);
                    Fold(p + 640, s5, ws * d5[b]);
                }
                Vector512<float> r0 = Reduce(part), r1 = Reduce(part + 128), r2 = Reduce(part + 256), r3 = Reduce(part + 384),
                    r4 = Reduce(part + 512), r5 = Reduce(part + 640);
                for (; b < blocks; b++)
                {
                    Vector512<int> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default;
                    PanelPack.AddSums(pw + b * 512, x + b * 64, stride, ref s0, ref s1, ref s2, ref s3, ref s4, ref s5);
                    Vector512<float> ws = Vector512.Load(ps + b * 16);
                    r0 += ws * d0[b] * Vector512.ConvertToSingle(s0);
                    r1 += ws * d1[b] * Vector512.ConvertToSingle(s1);
                    r2 += ws * d2[b] * Vector512.ConvertToSingle(s2);
                    r3 += ws * d3[b] * Vector512.ConvertToSingle(s3);
                    r4 += ws * d4[b] * Vector512.ConvertToSingle(s4);
                    r5 += ws * d5[b] * Vector512.ConvertToSingle(s5);
                }
                Store(r0, y + t0 * yStride, rows, lane);
                if (t0 + 1 < n) Store(r1, y + (t0 + 1) * yStride, rows, lane);
                if (t0 + 2 < n) Store(r2, y + (t0 + 2) * yStride, rows, lane);
                if (t0 + 3 < n) Store(r3, y + (t0 + 3) * yStride, rows, lane);
                if (t0 + 4 < n) Store(r4, y + (t0 + 4) * yStride, rows, lane);
                if (t0 + 5 < n) Store(r5, y + (t0 + 5) * yStride, rows, lane);
            }
        }
    }

    /// <summary>Tokens past n that <see cref="Multiply"/> may read (its last pass of six runs whole).</summary>
    public const int TokenPadding = TokensPerPass - 1;

    public const int PartialsLength = TokensPerPass * 8 * PanelRows;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Fold(float* p, Vector512<int> s, Vector512<float> scale) =>
        Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(s), scale, Vector512.Load(p)).Store(p);

    /// <summary>The eight partials of one token added in <see cref="BlockDots{T}.Reduce8"/>'s order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector512<float> Reduce(float* p)
    {
        Vector512<float> h0 = Vector512.Load(p) + Vector512.Load(p + 64), h1 = Vector512.Load(p + 16) + Vector512.Load(p + 80);
        Vector512<float> h2 = Vector512.Load(p + 32) + Vector512.Load(p + 96), h3 = Vector512.Load(p + 48) + Vector512.Load(p + 112);
        return (h0 + h2) + (h1 + h3);
    }

    private static unsafe void Store(Vector512<float> r, float* y, int rows, Span<float> lane)
    {
        if (rows == PanelRows) r.Store(y);
        else
        {
            r.CopyTo(lane);
            lane[..rows].CopyTo(new Span<float>(y, rows));
        }
    }
}

/// <summary>Where a panel's codes come from: sub-block s (32 weights) of one row as sixteen int32 lanes, each two
/// int16 codes (column pair i in lane i).</summary>
internal interface IPanelRows
{
    static abstract Vector512<int> Codes(ref byte row, int s);
}

/// <summary>Rows of 32-weight blocks (<see cref="IBlockCodes"/>): the block's codes widened.</summary>
internal readonly struct BlockRows<T> : IPanelRows where T : struct, IBlockCodes
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> Codes(ref byte row, int s) => Avx512BW.ConvertToVector512Int16(T.Codes(ref Unsafe.Add(ref row, s * T.Bytes))).AsInt32();
}

/// <summary>The panel layout and integer core shared by the panel kernels (<see cref="BlockGemm{T}"/>, <see cref="Q4KGemm"/>).</summary>
internal static class PanelPack
{
    /// <summary>panel[s, pair i, row j, 2] = row j's codes i·2, i·2 + 1 of sub-block s, for rows [0, rows) (missing rows 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Codes<TRows>(ref byte w, long rowBytes, int rows, int subBlocks, Span<short> panel) where TRows : IPanelRows
    {
        if (panel.Length < subBlocks * 512 || (uint)rows > 16) ThrowHelper.TooShort(nameof(panel), subBlocks * 512, panel.Length);
        ref short p = ref MemoryMarshal.GetReference(panel);
        for (int b = 0; b < subBlocks; b++)
        {
            // Rows in groups of four: two unpack rounds leave (u_q0, u_q1, u_q2, u_q3) = column pairs 4L + 0..3 of rows
            // 4q..4q+3 in 128-bit lane L; then a 4×4 transpose of 128-bit lanes gives column pair 4L + e of all sixteen
            // rows. Locals, not an array, so the sixteen vectors stay in registers.
            Quad<TRows>(ref w, rowBytes, rows, 0, b, out Vector512<int> u00, out Vector512<int> u01, out Vector512<int> u02, out Vector512<int> u03);
            Quad<TRows>(ref w, rowBytes, rows, 4, b, out Vector512<int> u10, out Vector512<int> u11, out Vector512<int> u12, out Vector512<int> u13);
            Quad<TRows>(ref w, rowBytes, rows, 8, b, out Vector512<int> u20, out Vector512<int> u21, out Vector512<int> u22, out Vector512<int> u23);
            Quad<TRows>(ref w, rowBytes, rows, 12, b, out Vector512<int> u30, out Vector512<int> u31, out Vector512<int> u32, out Vector512<int> u33);
            ref short pb = ref Unsafe.Add(ref p, b * 512);
            Lanes(ref pb, 0, u00, u10, u20, u30);
            Lanes(ref pb, 1, u01, u11, u21, u31);
            Lanes(ref pb, 2, u02, u12, u22, u32);
            Lanes(ref pb, 3, u03, u13, u23, u33);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quad<TRows>(ref byte w, long rowBytes, int rows, int j, int b,
        out Vector512<int> e0, out Vector512<int> e1, out Vector512<int> e2, out Vector512<int> e3) where TRows : IPanelRows
    {
        Vector512<int> r0 = Row<TRows>(ref w, rowBytes, rows, j, b), r1 = Row<TRows>(ref w, rowBytes, rows, j + 1, b);
        Vector512<int> r2 = Row<TRows>(ref w, rowBytes, rows, j + 2, b), r3 = Row<TRows>(ref w, rowBytes, rows, j + 3, b);
        Vector512<long> t0 = Avx512F.UnpackLow(r0, r1).AsInt64(), t1 = Avx512F.UnpackHigh(r0, r1).AsInt64();
        Vector512<long> t2 = Avx512F.UnpackLow(r2, r3).AsInt64(), t3 = Avx512F.UnpackHigh(r2, r3).AsInt64();
        e0 = Avx512F.UnpackLow(t0, t2).AsInt32();
        e1 = Avx512F.UnpackHigh(t0, t2).AsInt32();
        e2 = Avx512F.UnpackLow(t1, t3).AsInt32();
        e3 = Avx512F.UnpackHigh(t1, t3).AsInt32();
    }

    /// <summary>Stores column pairs e, 4 + e, 8 + e, 12 + e from the four row groups' vectors for e.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Lanes(ref short pb, int e, Vector512<int> g0, Vector512<int> g1, Vector512<int> g2, Vector512<int> g3)
    {
        Vector512<int> a = Avx512F.Shuffle4x128(g0, g1, 0x44), c = Avx512F.Shuffle4x128(g2, g3, 0x44);
        Vector512<int> bb = Avx512F.Shuffle4x128(g0, g1, 0xEE), d = Avx512F.Shuffle4x128(g2, g3, 0xEE);
        Avx512F.Shuffle4x128(a, c, 0x88).AsInt16().StoreUnsafe(ref pb, (nuint)(e * 32));
        Avx512F.Shuffle4x128(a, c, 0xDD).AsInt16().StoreUnsafe(ref pb, (nuint)((4 + e) * 32));
        Avx512F.Shuffle4x128(bb, d, 0x88).AsInt16().StoreUnsafe(ref pb, (nuint)((8 + e) * 32));
        Avx512F.Shuffle4x128(bb, d, 0xDD).AsInt16().StoreUnsafe(ref pb, (nuint)((12 + e) * 32));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Row<TRows>(ref byte w, long rowBytes, int rows, int j, int s) where TRows : IPanelRows =>
        j < rows ? TRows.Codes(ref Unsafe.Add(ref w, (nint)(j * rowBytes)), s) : Vector512<int>.Zero;

    /// <summary>Adds the exact int32 sums of one sub-block (32 columns) for the sixteen rows of <paramref name="w"/> and
    /// six tokens <paramref name="stride"/> bytes apart from <paramref name="x"/> (int16 codes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void AddSums(short* w, byte* x, nint stride, ref Vector512<int> s0, ref Vector512<int> s1,
        ref Vector512<int> s2, ref Vector512<int> s3, ref Vector512<int> s4, ref Vector512<int> s5)
    {
        byte* x1 = x + stride;
        for (int g = 0; g < 16; g++, w += 32, x += 4, x1 += 4)
        {
            Vector512<short> wv = Vector512.Load(w);
            s0 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Create(*(int*)x).AsInt16());
            s1 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Create(*(int*)x1).AsInt16());
            s2 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Create(*(int*)(x + 2 * stride)).AsInt16());
            s3 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Create(*(int*)(x1 + 2 * stride)).AsInt16());
            s4 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Create(*(int*)(x + 4 * stride)).AsInt16());
            s5 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Create(*(int*)(x1 + 4 * stride)).AsInt16());
        }
    }
}

/// <summary>Per-thread panel scratch for <see cref="BlockGemm{T}"/>, grown and then reused; 64-byte aligned.</summary>
internal static class GemmScratch
{
    [ThreadStatic] private static short[]? _panel;
    [ThreadStatic] private static float[]? _scales, _partials;

    public static Span<short> Panel(int shorts) => AlignedScratch.Grow(ref _panel, shorts);
    public static Span<float> Scales(int floats) => AlignedScratch.Grow(ref _scales, floats);
    public static Span<float> Partials => AlignedScratch.Grow(ref _partials, BlockGemm<Q8_0Codes>.PartialsLength);
}
