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

    /// <summary>Whether this CPU runs a panel kernel: the byte panels with AVX-VNNI, else the int16 panels with AVX-512.</summary>
    public static bool IsSupported => AvxVnni.IsSupported || Avx512BW.IsSupported;

    /// <summary>int16 elements of scratch a panel of <paramref name="blocks"/> blocks takes on this CPU's path (the
    /// byte tiles take a little over half).</summary>
    public static int PanelShorts(int blocks) => AvxVnni.IsSupported ? blocks * ByteTiles.BlockBytes / 2 : blocks * 512;

    /// <summary>Unpacks rows [0, <paramref name="rows"/>) (at most 16, <paramref name="rowBytes"/> apart) into
    /// <paramref name="panel"/> [blocks, 16 column pairs, 16 rows, 2] and their scales into
    /// <paramref name="scales"/> [blocks, 16 rows]; missing rows are zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pack(ref byte w, long rowBytes, int rows, int blocks, Span<short> panel, Span<float> scales)
    {
        if (AvxVnni.IsSupported)
        {
            PackBytes(ref w, rowBytes, rows, blocks, MemoryMarshal.AsBytes(panel)); // the byte tiles carry their fp16 scales
            return;
        }
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
            if (Avx512F.IsSupported) HalfTable.ToSingle(Vector256.Create<ushort>(halves)).StoreUnsafe(ref sc, (nuint)(b * 16));
            else
            {
                HalfTable.ToSingle(Vector128.Create<ushort>(halves)).StoreUnsafe(ref sc, (nuint)(b * 16));
                HalfTable.ToSingle(Vector128.Create<ushort>(halves[8..])).StoreUnsafe(ref sc, (nuint)(b * 16 + 8));
            }
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
        fixed (short* pw = panel, xq = x16)
        fixed (float* ps = scales, part = partials, xs = xd)
        {
            for (int t0 = 0; t0 < n; t0 += TokensPerPass)
            {
                // A short last pass runs on the padding tokens and stores only the real ones.
                byte* x = (byte*)(xq + (long)t0 * cols);
                float* d0 = xs + (long)t0 * blocks, d1 = d0 + blocks, d2 = d1 + blocks, d3 = d2 + blocks, d4 = d3 + blocks, d5 = d4 + blocks;
                // Partial j (blocks j, j + 8, ... in order, as BlockDots.V256 fuses them) in registers for the six
                // tokens, then stored for the reduction: no load and store of a partial per block.
                if (whole == 0) new Span<float>(part, PartialsLength).Clear();
                for (int j = 0; j < 8 && j < whole; j++)
                {
                    Vector512<float> p0 = default, p1 = default, p2 = default, p3 = default, p4 = default, p5 = default;
                    for (int bb = j; bb < whole; bb += 8)
                    {
                        Vector512<int> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default;
                        PanelPack.AddSums(pw + bb * 512, x + bb * 64, stride, ref s0, ref s1, ref s2, ref s3, ref s4, ref s5);
                        Vector512<float> ws = Vector512.Load(ps + bb * 16);
                        p0 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(s0), ws * d0[bb], p0);
                        p1 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(s1), ws * d1[bb], p1);
                        p2 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(s2), ws * d2[bb], p2);
                        p3 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(s3), ws * d3[bb], p3);
                        p4 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(s4), ws * d4[bb], p4);
                        p5 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(s5), ws * d5[bb], p5);
                    }
                    PanelPack.StorePartial(part, j, p0, p1, p2, p3, p4, p5);
                }
                int b = whole;
                PanelPack.ReducePass(part, out Vector512<float> r0, out Vector512<float> r1, out Vector512<float> r2, out Vector512<float> r3,
                    out Vector512<float> r4, out Vector512<float> r5);
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
                PanelPack.StorePass(r0, r1, r2, r3, r4, r5, y + t0 * yStride, yStride, n - t0, rows);
            }
        }
    }

    /// <summary>The code added to every weight so that it is an unsigned byte for <c>vpdpbusd</c> (u8 × s8): the
    /// format's own offset, or 128 for codes that span the signed byte range (Q8_0). Each block's sum then carries
    /// <c>Bias · Σx</c>, which is taken off exactly.</summary>
    private static int Bias => T.Offset != 0 ? T.Offset : 128;

    /// <summary>Packs rows into byte tiles (<see cref="ByteTiles"/>): each block's sixteen fp16 scales, then its codes +
    /// <see cref="Bias"/> as unsigned bytes by groups of four columns (an 8×8 transpose of 32-bit groups per half of
    /// the rows). Missing rows are zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void PackBytes(ref byte w, long rowBytes, int rows, int blocks, Span<byte> panel)
    {
        if (panel.Length < blocks * ByteTiles.BlockBytes || (uint)rows > 16) ThrowHelper.TooShort(nameof(panel), blocks * ByteTiles.BlockBytes, panel.Length);
        ref byte p = ref MemoryMarshal.GetReference(panel);
        for (int b = 0; b < blocks; b++)
        {
            ref ushort scales = ref Unsafe.As<byte, ushort>(ref Unsafe.Add(ref p, b * ByteTiles.BlockBytes));
            for (int j = 0; j < PanelRows; j++)
                Unsafe.Add(ref scales, j) = j < rows ? Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref w, (nint)(j * rowBytes + b * T.Bytes))) : (ushort)0;
        }
        for (int b = 0; b < blocks; b++)
        for (int h = 0; h < 2; h++)
        {
            ref byte row = ref Unsafe.Add(ref w, (nint)(b * T.Bytes + 8 * h * rowBytes));
            Vector256<int> c0 = Biased(ref row, rowBytes, rows - 8 * h, 0), c1 = Biased(ref row, rowBytes, rows - 8 * h, 1);
            Vector256<int> c2 = Biased(ref row, rowBytes, rows - 8 * h, 2), c3 = Biased(ref row, rowBytes, rows - 8 * h, 3);
            Vector256<int> c4 = Biased(ref row, rowBytes, rows - 8 * h, 4), c5 = Biased(ref row, rowBytes, rows - 8 * h, 5);
            Vector256<int> c6 = Biased(ref row, rowBytes, rows - 8 * h, 6), c7 = Biased(ref row, rowBytes, rows - 8 * h, 7);
            // Pairs of rows interleaved per group, then quads per two groups: u_e holds groups e (low lane) and e + 4
            // (high lane) of rows 0–3 (u0..u3) or 4–7 (u4..u7).
            Vector256<long> t0 = Avx2.UnpackLow(c0, c1).AsInt64(), t1 = Avx2.UnpackHigh(c0, c1).AsInt64();
            Vector256<long> t2 = Avx2.UnpackLow(c2, c3).AsInt64(), t3 = Avx2.UnpackHigh(c2, c3).AsInt64();
            Vector256<long> t4 = Avx2.UnpackLow(c4, c5).AsInt64(), t5 = Avx2.UnpackHigh(c4, c5).AsInt64();
            Vector256<long> t6 = Avx2.UnpackLow(c6, c7).AsInt64(), t7 = Avx2.UnpackHigh(c6, c7).AsInt64();
            Vector256<long> u0 = Avx2.UnpackLow(t0, t2), u1 = Avx2.UnpackHigh(t0, t2), u2 = Avx2.UnpackLow(t1, t3), u3 = Avx2.UnpackHigh(t1, t3);
            Vector256<long> u4 = Avx2.UnpackLow(t4, t6), u5 = Avx2.UnpackHigh(t4, t6), u6 = Avx2.UnpackLow(t5, t7), u7 = Avx2.UnpackHigh(t5, t7);
            ref byte pb = ref Unsafe.Add(ref p, b * ByteTiles.BlockBytes + ByteTiles.ScaleBytes + h * 32);
            StoreGroups(ref pb, 0, u0, u4);
            StoreGroups(ref pb, 1, u1, u5);
            StoreGroups(ref pb, 2, u2, u6);
            StoreGroups(ref pb, 3, u3, u7);
        }
    }

    /// <summary>Groups e and e + 4 of eight rows from the quads of rows 0–3 and 4–7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreGroups(ref byte pb, int e, Vector256<long> low, Vector256<long> high)
    {
        Avx2.Permute2x128(low, high, 0x20).AsByte().StoreUnsafe(ref pb, (nuint)(e * 64));
        Avx2.Permute2x128(low, high, 0x31).AsByte().StoreUnsafe(ref pb, (nuint)((e + 4) * 64));
    }

    /// <summary>Row j's codes of the block at <paramref name="row"/> + <see cref="Bias"/>, as eight groups of four
    /// bytes; zero past the last row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Biased(ref byte row, long rowBytes, int rows, int j)
    {
        if (j >= rows) return Vector256<int>.Zero;
        ref byte block = ref Unsafe.Add(ref row, (nint)(j * rowBytes));
        return T.Offset != 0 ? T.Unsigned(ref block).AsInt32() : (T.Codes(ref block).AsByte() ^ Vector256.Create((byte)0x80)).AsInt32();
    }

    /// <summary><see cref="Multiply"/> on byte tiles (<see cref="ByteTiles"/>: packed by <see cref="PackBytes"/>, or a
    /// Q8_0 matrix kept so) with AVX-VNNI: each token's four codes of a column group are broadcast and one
    /// <c>vpdpbusd</c> adds their products with the same group of eight rows into int32 lanes that start at −Bias·Σx
    /// of the block, so every lane ends on the row's exact block sum. The float arithmetic that follows is
    /// <see cref="Multiply"/>'s, lane for lane. <paramref name="tiles"/> holds <paramref name="blocks"/> tiles;
    /// <paramref name="xq"/> [n, blocks · 32] codes, <paramref name="xd"/> scales and <paramref name="xsum"/> block sums
    /// (<see cref="QuantizedActivations"/>), each readable up to <see cref="TokenPadding"/> tokens past n.
    /// <paramref name="prefetch"/>: the tiles stream from memory (a matrix kept in tiles, not a packed panel), so the
    /// first pass prefetches <see cref="PrefetchBytes"/> ahead, past the group's end into the next one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void MultiplyBytes(byte* tiles, int blocks, int rows,
        ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> xsum, int n, Span<float> partials, float* y, long yStride,
        bool prefetch = false)
    {
        int cols = blocks * 32, padded = (n + BytePass - 1) / BytePass * BytePass;
        if (xq.Length < padded * cols || xd.Length < padded * blocks || xsum.Length < padded * blocks || partials.Length < PartialsLength)
            ThrowHelper.TooShort(nameof(xq), padded * cols, xq.Length);
        int whole = blocks / 8 * 8, bias = -Bias;
        Span<float> lane = stackalloc float[PanelRows];
        // −Bias · Σx of each block and token of a pass, as int32 in memory: an accumulator starts as one broadcast load.
        int* start = stackalloc int[BytePass * blocks];
        fixed (sbyte* xq0 = xq)
        fixed (short* xu = xsum)
        fixed (float* part = partials, xs = xd)
        {
            for (int t0 = 0; t0 < n; t0 += BytePass)
            {
                sbyte* x = xq0 + (long)t0 * cols;
                short* u = xu + (long)t0 * blocks;
                float* d = xs + (long)t0 * blocks;
                int i = 0;
                for (; i + 8 <= BytePass * blocks; i += 8)
                    (Avx2.ConvertToVector256Int32(u + i) * bias).Store(start + i);
                for (; i < BytePass * blocks; i++) start[i] = bias * u[i];
                new Span<float>(part, BytePass * 128).Clear();
                Vector256<float> r00 = default, r01 = default, r10 = default, r11 = default, r20 = default, r21 = default,
                    r30 = default, r31 = default;
                for (int b = 0; b < blocks; b++)
                {
                    Vector256<int> s00 = Vector256.Create(start[b]), s10 = Vector256.Create(start[blocks + b]);
                    Vector256<int> s20 = Vector256.Create(start[2 * blocks + b]), s30 = Vector256.Create(start[3 * blocks + b]);
                    Vector256<int> s01 = s00, s11 = s10, s21 = s20, s31 = s30;
                    byte* tile = tiles + (long)b * ByteTiles.BlockBytes, wp = tile + ByteTiles.ScaleBytes;
                    sbyte* xb = x + b * 32;
                    if (prefetch && t0 == 0) Prefetch(tile + PrefetchBytes);
                    // The eight column groups written out: as a loop, the JIT reloads token offsets from the stack.
                    Step4(wp, xb, cols, 0, ref s00, ref s01, ref s10, ref s11, ref s20, ref s21, ref s30, ref s31);
                    Step4(wp, xb, cols, 1, ref s00, ref s01, ref s10, ref s11, ref s20, ref s21, ref s30, ref s31);
                    Step4(wp, xb, cols, 2, ref s00, ref s01, ref s10, ref s11, ref s20, ref s21, ref s30, ref s31);
                    Step4(wp, xb, cols, 3, ref s00, ref s01, ref s10, ref s11, ref s20, ref s21, ref s30, ref s31);
                    Step4(wp, xb, cols, 4, ref s00, ref s01, ref s10, ref s11, ref s20, ref s21, ref s30, ref s31);
                    Step4(wp, xb, cols, 5, ref s00, ref s01, ref s10, ref s11, ref s20, ref s21, ref s30, ref s31);
                    Step4(wp, xb, cols, 6, ref s00, ref s01, ref s10, ref s11, ref s20, ref s21, ref s30, ref s31);
                    Step4(wp, xb, cols, 7, ref s00, ref s01, ref s10, ref s11, ref s20, ref s21, ref s30, ref s31);
                    if (b < whole)
                    {
                        float* p = part + (b & 7) * 16;
                        if (Avx512F.IsSupported)
                        {
                            // Both halves of a token in one 512-bit register: half the multiplies on the pipes the
                            // vpdpbusd take.
                            Vector512<float> ws = HalfTable.ToSingle(Vector256.Load((ushort*)tile));
                            Fold(p, Join(s00, s01), ws * Vector512.Create(d[b]));
                            Fold(p + 128, Join(s10, s11), ws * Vector512.Create(d[blocks + b]));
                            Fold(p + 256, Join(s20, s21), ws * Vector512.Create(d[2 * blocks + b]));
                            Fold(p + 384, Join(s30, s31), ws * Vector512.Create(d[3 * blocks + b]));
                        }
                        else
                        {
                            Vector256<float> ws0 = ByteTiles.Scales(tile, 0), ws1 = ByteTiles.Scales(tile, 8);
                            Fold(p, s00, s01, ws0, ws1, d + b);
                            Fold(p + 128, s10, s11, ws0, ws1, d + blocks + b);
                            Fold(p + 256, s20, s21, ws0, ws1, d + 2 * blocks + b);
                            Fold(p + 384, s30, s31, ws0, ws1, d + 3 * blocks + b);
                        }
                        if (b + 1 == whole)
                        {
                            ByteTiles.Reduce(part, out r00, out r01);
                            ByteTiles.Reduce(part + 128, out r10, out r11);
                            ByteTiles.Reduce(part + 256, out r20, out r21);
                            ByteTiles.Reduce(part + 384, out r30, out r31);
                        }
                    }
                    else
                    {
                        // The last blocks one at a time, as BlockDots.V256 adds them.
                        Vector256<float> ws0 = ByteTiles.Scales(tile, 0), ws1 = ByteTiles.Scales(tile, 8);
                        Tail(ref r00, ref r01, s00, s01, ws0, ws1, d[b]);
                        Tail(ref r10, ref r11, s10, s11, ws0, ws1, d[blocks + b]);
                        Tail(ref r20, ref r21, s20, s21, ws0, ws1, d[2 * blocks + b]);
                        Tail(ref r30, ref r31, s30, s31, ws0, ws1, d[3 * blocks + b]);
                    }
                }
                Store(r00, r01, y + t0 * yStride, rows, lane);
                if (t0 + 1 < n) Store(r10, r11, y + (t0 + 1) * yStride, rows, lane);
                if (t0 + 2 < n) Store(r20, r21, y + (t0 + 2) * yStride, rows, lane);
                if (t0 + 3 < n) Store(r30, r31, y + (t0 + 3) * yStride, rows, lane);
            }
        }
    }

    /// <summary>Column group g of a tile (two 256-bit loads: four columns of sixteen rows) against four tokens'
    /// codes there, <paramref name="cols"/> bytes apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Step4(byte* wp, sbyte* xb, nint cols, int g,
        ref Vector256<int> s00, ref Vector256<int> s01, ref Vector256<int> s10, ref Vector256<int> s11,
        ref Vector256<int> s20, ref Vector256<int> s21, ref Vector256<int> s30, ref Vector256<int> s31)
    {
        Vector256<byte> w0 = Vector256.Load(wp + 64 * g), w1 = Vector256.Load(wp + 64 * g + 32);
        sbyte* xg = xb + 4 * g;
        Vector256<sbyte> v = Vector256.Create(*(int*)xg).AsSByte();
        s00 = AvxVnni.MultiplyWideningAndAdd(s00, w0, v);
        s01 = AvxVnni.MultiplyWideningAndAdd(s01, w1, v);
        v = Vector256.Create(*(int*)(xg + cols)).AsSByte();
        s10 = AvxVnni.MultiplyWideningAndAdd(s10, w0, v);
        s11 = AvxVnni.MultiplyWideningAndAdd(s11, w1, v);
        v = Vector256.Create(*(int*)(xg + 2 * cols)).AsSByte();
        s20 = AvxVnni.MultiplyWideningAndAdd(s20, w0, v);
        s21 = AvxVnni.MultiplyWideningAndAdd(s21, w1, v);
        v = Vector256.Create(*(int*)(xg + 3 * cols)).AsSByte();
        s30 = AvxVnni.MultiplyWideningAndAdd(s30, w0, v);
        s31 = AvxVnni.MultiplyWideningAndAdd(s31, w1, v);
    }

    /// <summary>Rows 0–7 and 8–15 in one register (<c>Vector512.Create(low, high)</c> goes through the stack).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Join(Vector256<int> low, Vector256<int> high) => Avx512F.InsertVector256(low.ToVector512Unsafe(), high, 1);

    /// <summary>How far ahead of its reads <see cref="MultiplyBytes"/> prefetches tiles streamed from memory: sixteen
    /// tiles (8.5 KB). A few tokens' arithmetic per tile leaves the hardware prefetcher behind: four tokens over 270
    /// MB of expert-shaped tiles read 18 → 25 GB/s on one thread and 30 → 39 on two with it (distances of 4–32 tiles
    /// measured; one token's kernel gains nothing from it).</summary>
    private const int PrefetchBytes = 16 * ByteTiles.BlockBytes;

    /// <summary>Every line of the tile at <paramref name="p"/> into the caches (nine prefetches: a tile starts anywhere
    /// in a line).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Prefetch(byte* p)
    {
        Q4KTiles.PrefetchFourLines(p);
        Q4KTiles.PrefetchFourLines(p + 256);
        Sse.Prefetch0(p + 512);
    }

    /// <summary>Tokens a pass of <see cref="MultiplyBytes"/> (eight int32 accumulators: the JIT keeps more in the
    /// registers VEX can name only by moving them through one, a copy per instruction).</summary>
    private const int BytePass = 4;

    /// <summary><see cref="ByteTiles.Fold"/> with the token's block scale at <paramref name="d"/> (one broadcast load for
    /// both halves).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Fold(float* p, Vector256<int> s0, Vector256<int> s1, Vector256<float> ws0, Vector256<float> ws1, float* d)
    {
        Vector256<float> dv = Vector256.Create(*d);
        ByteTiles.Fold(p, s0, s1, ws0 * dv, ws1 * dv);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tail(ref Vector256<float> r0, ref Vector256<float> r1, Vector256<int> s0, Vector256<int> s1,
        Vector256<float> ws0, Vector256<float> ws1, float d) =>
        ByteTiles.Tail(ref r0, ref r1, s0, s1, ws0 * d, ws1 * d);

    private static unsafe void Store(Vector256<float> r0, Vector256<float> r1, float* y, int rows, Span<float> lane)
    {
        if (rows == PanelRows)
        {
            r0.Store(y);
            r1.Store(y + 8);
        }
        else
        {
            r0.CopyTo(lane);
            r1.CopyTo(lane[8..]);
            lane[..rows].CopyTo(new Span<float>(y, rows));
        }
    }

    /// <summary>Tokens past n that <see cref="Multiply"/> may read (its last pass of six runs whole).</summary>
    public const int TokenPadding = TokensPerPass - 1;

    public const int PartialsLength = TokensPerPass * 8 * PanelRows;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Fold(float* p, Vector512<int> s, Vector512<float> scale) =>
        Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(s), scale, Vector512.Load(p)).Store(p);

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

    /// <summary>The eight partials of one token at <paramref name="p"/> (sixteen rows each, 128 floats) added in
    /// <see cref="BlockDots{T}.Reduce8"/>'s order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector512<float> Reduce(float* p)
    {
        Vector512<float> h0 = Vector512.Load(p) + Vector512.Load(p + 64), h1 = Vector512.Load(p + 16) + Vector512.Load(p + 80);
        Vector512<float> h2 = Vector512.Load(p + 32) + Vector512.Load(p + 96), h3 = Vector512.Load(p + 48) + Vector512.Load(p + 112);
        return (h0 + h2) + (h1 + h3);
    }

    /// <summary>Partial <paramref name="j"/> (0..7) of a pass's six tokens into <paramref name="partials"/> [6, 8, 16]:
    /// token t's at 128t + 16j.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void StorePartial(float* partials, int j, Vector512<float> p0, Vector512<float> p1, Vector512<float> p2,
        Vector512<float> p3, Vector512<float> p4, Vector512<float> p5)
    {
        float* p = partials + j * 16;
        p0.Store(p); p1.Store(p + 128); p2.Store(p + 256); p3.Store(p + 384); p4.Store(p + 512); p5.Store(p + 640);
    }

    /// <summary>Each of a pass's six tokens' eight partials (<see cref="StorePartial"/>) added by <see cref="Reduce"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void ReducePass(float* partials, out Vector512<float> r0, out Vector512<float> r1, out Vector512<float> r2,
        out Vector512<float> r3, out Vector512<float> r4, out Vector512<float> r5)
    {
        r0 = Reduce(partials); r1 = Reduce(partials + 128); r2 = Reduce(partials + 256);
        r3 = Reduce(partials + 384); r4 = Reduce(partials + 512); r5 = Reduce(partials + 640);
    }

    /// <summary>A pass's six tokens' results (sixteen rows each) to y, <paramref name="yStride"/> apart: the first
    /// <paramref name="tokens"/> of them (a short last pass ran on padding), the first <paramref name="rows"/> rows.</summary>
    public static unsafe void StorePass(Vector512<float> r0, Vector512<float> r1, Vector512<float> r2, Vector512<float> r3,
        Vector512<float> r4, Vector512<float> r5, float* y, long yStride, int tokens, int rows)
    {
        Store(r0, y, rows);
        if (tokens > 1) Store(r1, y + yStride, rows);
        if (tokens > 2) Store(r2, y + 2 * yStride, rows);
        if (tokens > 3) Store(r3, y + 3 * yStride, rows);
        if (tokens > 4) Store(r4, y + 4 * yStride, rows);
        if (tokens > 5) Store(r5, y + 5 * yStride, rows);
    }

    private static unsafe void Store(Vector512<float> r, float* y, int rows)
    {
        if (rows == 16) r.Store(y);
        else
        {
            float* lane = stackalloc float[16];
            r.Store(lane);
            for (int j = 0; j < rows; j++) y[j] = lane[j];
        }
    }

    /// <summary>Adds the exact int32 sums of one sub-block (32 columns) for the sixteen rows of <paramref name="w"/> and
    /// six tokens <paramref name="stride"/> bytes apart from <paramref name="x"/> (int16 codes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void AddSums(short* w, byte* x, nint stride, ref Vector512<int> s0, ref Vector512<int> s1,
        ref Vector512<int> s2, ref Vector512<int> s3, ref Vector512<int> s4, ref Vector512<int> s5)
    {
        byte* x1 = x + stride;
        for (int g = 0; g < 16; g++, w += 32, x += 4, x1 += 4)
        {
            // The six broadcasts, then the six products, then the six adds, each value its own register: written a token
            // at a time, the JIT gave every broadcast and product one register, and the loop ran ~16% slower on Zen 4
            // (one panel against 48 tokens in cache, one thread: 70 GMAC/s, now 83).
            Vector512<short> wv = Vector512.Load(w);
            Vector512<short> c0 = Vector512.Create(*(int*)x).AsInt16(), c1 = Vector512.Create(*(int*)x1).AsInt16();
            Vector512<short> c2 = Vector512.Create(*(int*)(x + 2 * stride)).AsInt16(), c3 = Vector512.Create(*(int*)(x1 + 2 * stride)).AsInt16();
            Vector512<short> c4 = Vector512.Create(*(int*)(x + 4 * stride)).AsInt16(), c5 = Vector512.Create(*(int*)(x1 + 4 * stride)).AsInt16();
            Vector512<int> m0 = Avx512BW.MultiplyAddAdjacent(wv, c0), m1 = Avx512BW.MultiplyAddAdjacent(wv, c1), m2 = Avx512BW.MultiplyAddAdjacent(wv, c2);
            Vector512<int> m3 = Avx512BW.MultiplyAddAdjacent(wv, c3), m4 = Avx512BW.MultiplyAddAdjacent(wv, c4), m5 = Avx512BW.MultiplyAddAdjacent(wv, c5);
            s0 += m0; s1 += m1; s2 += m2; s3 += m3; s4 += m4; s5 += m5;
        }
    }
}

/// <summary>Per-thread panel scratch for <see cref="BlockGemm{T}"/>, grown and then reused; 64-byte aligned.</summary>
internal static class GemmScratch
{
    [ThreadStatic] private static short[]? _panel;
    [ThreadStatic] private static float[]? _scales, _partials, _edge, _tileScales;
    [ThreadStatic] private static byte[]? _unpacked;

    public static Span<short> Panel(int shorts) => AlignedScratch.Grow(ref _panel, shorts);
    public static Span<float> Scales(int floats) => AlignedScratch.Grow(ref _scales, floats);
    public static Span<float> Partials => AlignedScratch.Grow(ref _partials, BlockGemm<Q8_0Codes>.PartialsLength);

    /// <summary>Results of a tile group for tokens [0, floats / 16), where only some of its rows are wanted.</summary>
    public static Span<float> Edge(int floats) => AlignedScratch.Grow(ref _edge, floats);

    /// <summary>A tile group's scales as float32, for the passes of four tokens over it
    /// (<see cref="ByteTiles.Four{TCodes}"/>; pinned: the pointer stays valid until the next call).</summary>
    public static unsafe float* TileScales(int floats) => (float*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(AlignedScratch.Grow(ref _tileScales, floats)));

    /// <summary>Byte tiles unpacked from a compact tile format (pinned: the pointer stays valid until the next call).</summary>
    public static unsafe byte* Unpacked(int bytes) => (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(AlignedScratch.Grow(ref _unpacked, bytes)));
}
