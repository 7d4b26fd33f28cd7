using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Q6_K rows interleaved sixteen at a time for the one- and four-token kernels (512-bit with AVX-512, else
/// 256-bit halves with AVX2), as <see cref="Q4KTiles"/> does for Q4_K.
/// In GGUF's layout a one-token Q6_K product spends as many instructions picking sub-block scales, taking off the
/// codes' offset and reducing each row's lanes as multiplying, and streamed at two thirds of the read bound; with
/// rows in the 32-bit lanes every activation group is broadcast once for sixteen rows and no lane is ever reduced.
/// A group of sixteen rows starts with the d of every super-block (rows 0..15 as GGUF's fp16, 32 bytes a super-block,
/// padded to a whole cache line), then one tile per super-block (256 columns), 16 × 208 bytes: every value GGUF
/// stores, and 32 bytes of padding a group where the super-blocks are odd in number.
/// <list type="bullet">
/// <item>tile bytes [0, 256): sub-block scales in pairs, byte 32p + 2r + e = row r's int8 scale of sub-block 2p + e
/// (so a pair widens to one int16 pair per row, the operand of <c>vpmaddwd</c>).</item>
/// <item>[256, 3328): the codes (0..63, w = d · sc · (q − 32)) of sub-block m (columns 16m..16m + 15) in 192 bytes
/// at 256 + 192m: two nibble vectors, byte 4r + i of the first holding row r's low four bits of column 16m + i (low
/// nibble) and 16m + 4 + i (high), of the second those of 16m + 8 + i and 16m + 12 + i; then a vector of top bits,
/// byte 4r + i holding the top two bits of columns 16m + i, + 4 + i, + 8 + i, + 12 + i (bits 0–1, 2–3, 4–5, 6–7).
/// A mask, a shift and an or give four consecutive columns of all sixteen rows.</item>
/// </list>
/// Tiles are whole cache lines, so no 64-byte load of codes straddles two lines: with d inside each tile (3,360 bytes)
/// every other tile's loads did, and one-token products streamed at 76–83% of the read bound on two threads, 63%
/// with every tile's (a tile padded to 3,392 bytes), against the Q4_K tiles' 90–100%.
/// A kernel reads a tile front to back, so consecutive tiles are one sequential stream.
/// <para>The arithmetic is <see cref="Q6K.Scalar"/>'s: the exact integer I = Σ_j sc_j · Σ q·x − 32 · Σ_j sc_j · Σx_j
/// per super-block (u6 × s8 pair sums of two groups of four add up in int16: 4 · 63 · 127 = 32,004), then
/// sum += (d · dx) · I in block order — the same bits as every other Q6_K path.</para></summary>
internal static unsafe class Q6KTiles
{
    public const int Rows = 16, TileBytes = 16 * BlockQ6K.Bytes - 32;
    private const int ScaleOffset = 0, CodeOffset = 256, SubBlockBytes = 192;

    /// <summary>Bytes of the d of a group's tiles, a multiple of 64 so that the tiles after them start on a cache line.</summary>
    private static int HalfBytes(int superBlocks) => (superBlocks * 32 + 63) / 64 * 64;

    /// <summary>Bytes of a group of sixteen rows of <paramref name="superBlocks"/> super-blocks: a multiple of 64.</summary>
    public static long GroupBytes(int superBlocks) => HalfBytes(superBlocks) + (long)superBlocks * TileBytes;

    /// <summary>Super-block b's tile of the group at <paramref name="group"/>.</summary>
    private static byte* Tile(byte* group, int superBlocks, int b) => group + HalfBytes(superBlocks) + (long)b * TileBytes;

    /// <summary>Super-block b's sixteen d of the group at <paramref name="group"/>.</summary>
    private static ushort* Halves(byte* group, int b) => (ushort*)(group + 32 * b);

    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>How far ahead of the tile being multiplied its lines are prefetched: two tiles. Without it a
    /// one-token product over 220 MB streamed at 40–41 GB/s on two threads and 21–22 on one, against the file layout's
    /// 43–51 and 31 and Q4_K's tiles' 47–61 and 34; two tiles ahead 53–56 and 38 (medians of 37 passes, every variant
    /// in turn in one process; one, three and four tiles ahead were no better).</summary>
    private const int PrefetchAhead = 2 * TileBytes;

    /// <summary>Writes row <paramref name="r"/> (0..15) of the tile group at <paramref name="group"/> from GGUF blocks.
    /// Rows of one group touch disjoint bytes, so rows can be written from several threads.</summary>
    public static void SetRow(ReadOnlySpan<BlockQ6K> row, byte* group, int r)
    {
        byte* codes = stackalloc byte[256];
        for (int b = 0; b < row.Length; b++)
        {
            byte* t = Tile(group, row.Length, b);
            BlockQ6K blk = row[b];
            for (int half = 0; half < 2; half++)
                for (int l = 0; l < 32; l++)
                {
                    // GGUF: low byte l and 32 + l of a half hold columns l, 32 + l (low nibbles) and 64 + l, 96 + l
                    // (high); high byte l their top two bits (bits 0–1, 2–3, 4–5, 6–7).
                    byte a = blk.Ql[64 * half + l], c = blk.Ql[64 * half + 32 + l], h = blk.Qh[32 * half + l];
                    byte* q = codes + 128 * half + l;
                    q[0] = (byte)((a & 0xF) | (h & 3) << 4);
                    q[32] = (byte)((c & 0xF) | (h >> 2 & 3) << 4);
                    q[64] = (byte)((a >> 4) | (h >> 4 & 3) << 4);
                    q[96] = (byte)((c >> 4) | (h >> 6 & 3) << 4);
                }
            for (int m = 0; m < 16; m++)
            {
                byte* v = t + CodeOffset + m * SubBlockBytes + 4 * r;
                byte* q = codes + 16 * m;
                for (int i = 0; i < 4; i++)
                {
                    v[i] = (byte)((q[i] & 0xF) | (q[4 + i] & 0xF) << 4);
                    v[64 + i] = (byte)((q[8 + i] & 0xF) | (q[12 + i] & 0xF) << 4);
                    v[128 + i] = (byte)(q[i] >> 4 | (q[4 + i] >> 4) << 2 | (q[8 + i] >> 4) << 4 | (q[12 + i] >> 4) << 6);
                }
            }
            for (int j = 0; j < 16; j++) t[ScaleOffset + j / 2 * 32 + 2 * r + j % 2] = (byte)blk.Sc[j];
            Halves(group, b)[r] = blk.D;
        }
    }

    /// <summary>Row <paramref name="r"/> of the tile group as GGUF blocks (the exact inverse of <see cref="SetRow"/>).</summary>
    public static void GetRow(byte* group, int r, Span<BlockQ6K> row)
    {
        for (int b = 0; b < row.Length; b++)
        {
            byte* t = Tile(group, row.Length, b);
            ref BlockQ6K blk = ref row[b];
            blk = default;
            for (int m = 0; m < 16; m++)
            {
                byte* v = t + CodeOffset + m * SubBlockBytes + 4 * r;
                for (int i = 0; i < 4; i++)
                {
                    SetCode(ref blk, 16 * m + i, (v[i] & 0xF) | (v[128 + i] & 3) << 4);
                    SetCode(ref blk, 16 * m + 4 + i, (v[i] >> 4) | (v[128 + i] >> 2 & 3) << 4);
                    SetCode(ref blk, 16 * m + 8 + i, (v[64 + i] & 0xF) | (v[128 + i] >> 4 & 3) << 4);
                    SetCode(ref blk, 16 * m + 12 + i, (v[64 + i] >> 4) | (v[128 + i] >> 6) << 4);
                }
            }
            for (int j = 0; j < 16; j++) blk.Sc[j] = (sbyte)t[ScaleOffset + j / 2 * 32 + 2 * r + j % 2];
            blk.D = Halves(group, b)[r];
        }
    }

    /// <summary>Code (0..63) of column c into a GGUF block (the packing <see cref="Q6K.QuantizeRow"/> writes).</summary>
    private static void SetCode(ref BlockQ6K b, int c, int q)
    {
        int half = c / 128, k = c % 128 / 32, l = c % 32;
        b.Ql[half * 64 + (k % 2) * 32 + l] |= (byte)((q & 0xF) << (k < 2 ? 0 : 4));
        b.Qh[half * 32 + l] |= (byte)((q >> 4) << (2 * k));
    }

    /// <summary>Token <paramref name="token"/> of <paramref name="a"/> (quantised per 256) against the sixteen rows of
    /// the tile group at <paramref name="group"/>: row r's result in <paramref name="lanes"/>[r].</summary>
    public static void One(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes)
    {
        CheckTokens(a, superBlocks, token + 1);
        PrefetchHalves(group, superBlocks);
        fixed (sbyte* q = a.Q) fixed (float* d = a.D) fixed (short* s = a.Sums16)
        {
            sbyte* x = q + (long)token * superBlocks * 256;
            if (Avx512BW.IsSupported) OneKernel(group, superBlocks, x, d + token * superBlocks, s + token * superBlocks * 16, lanes);
            else OneKernel256(group, superBlocks, x, d + token * superBlocks, s + token * superBlocks * 16, lanes);
        }
    }

    /// <summary>Tokens <paramref name="token"/> .. + 3 at once: token t's row r in <paramref name="lanes"/>[16t + r].</summary>
    public static void Four(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes)
    {
        CheckTokens(a, superBlocks, token + 4);
        PrefetchHalves(group, superBlocks);
        fixed (sbyte* q = a.Q) fixed (float* d = a.D) fixed (short* s = a.Sums16)
        {
            sbyte* x = q + (long)token * superBlocks * 256;
            if (Avx512BW.IsSupported) FourKernel(group, superBlocks, x, superBlocks * 256, d + token * superBlocks, s + token * superBlocks * 16, lanes);
            else
                for (int half = 0; half < 2; half++)
                    FourKernel256(group, half, superBlocks, x, superBlocks * 256, d + token * superBlocks, s + token * superBlocks * 16, lanes + 8 * half);
        }
    }

    /// <summary>The d come first in the group, where the stream the hardware prefetcher follows starts past them: ask for
    /// all their lines at once.</summary>
    private static void PrefetchHalves(byte* group, int superBlocks)
    {
        for (int i = 0; i < HalfBytes(superBlocks); i += 64) Sse.Prefetch0(group + i);
    }

    private static void CheckTokens(QuantizedActivations a, int superBlocks, int tokens)
    {
        if (a.Q.Length < (long)tokens * superBlocks * 256 || a.D.Length < tokens * superBlocks || a.Sums16.Length < tokens * superBlocks * 16)
            ThrowHelper.TooShort(nameof(a), (long)tokens * superBlocks * 256, a.Q.Length);
    }

    /// <summary>One token: the sixteen rows' results into <paramref name="result"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)] // compiled optimised at once, on its own: inlined into a tier-1 caller, its helpers were left as calls
    private static void OneKernel(byte* group, int superBlocks, sbyte* x, float* xd, short* sums16, float* result)
    {
        bool ahead = Q4KTiles.PrefetchesAhead; // first and once, not in the loop (Q4KTiles.OneLookAhead)
        Vector512<float> sum = default;
        for (int b = 0; b < superBlocks; b++, x += 256, sums16 += 16)
        {
            byte* t = Tile(group, superBlocks, b);
            Vector512<float> d = D(group, b); // loaded before the codes, so a miss overlaps them
            Vector512<int> isum = default, offset = default;
            for (int p = 0; p < 8; p++)
            {
                Vector512<short> pair = ScalePair(t, p);
                Prefetch(t, p, ahead);
                offset += Avx512BW.MultiplyAddAdjacent(pair, Broadcast(sums16 + 2 * p));
                byte* v = t + CodeOffset + 2 * p * SubBlockBytes;
                sbyte* xm = x + 32 * p;
                Unpack(v, out Vector512<byte> c0, out Vector512<byte> c1, out Vector512<byte> c2, out Vector512<byte> c3);
                isum = Step(isum, c0, c1, c2, c3, Pick(pair, 0), xm);
                Unpack(v + SubBlockBytes, out c0, out c1, out c2, out c3);
                isum = Step(isum, c0, c1, c2, c3, Pick(pair, 1), xm + 16);
            }
            sum += d * Vector512.Create(xd[b]) * Vector512.ConvertToSingle(isum - (offset << 5));
        }
        sum.Store(result);
    }

    /// <summary>Four tokens <paramref name="stride"/> codes apart: each sub-block's codes are loaded and unpacked once
    /// for all four; every token's lanes get exactly <see cref="OneKernel"/>'s arithmetic.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)] // compiled optimised at once, on its own: inlined into a tier-1 caller, its helpers were left as calls
    private static void FourKernel(byte* group, int superBlocks, sbyte* x, int stride, float* xd, short* sums16, float* result)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int sStride = stride / 16, dStride = stride / 256;
        for (int b = 0; b < superBlocks; b++, x += 256, sums16 += 16)
        {
            byte* t = Tile(group, superBlocks, b);
            Vector512<float> d = D(group, b);
            Vector512<int> i0 = default, i1 = default, i2 = default, i3 = default, o0 = default, o1 = default, o2 = default, o3 = default;
            for (int p = 0; p < 8; p++)
            {
                Vector512<short> pair = ScalePair(t, p);
                PrefetchAlways(t, p);
                short* s = sums16 + 2 * p;
                o0 += Avx512BW.MultiplyAddAdjacent(pair, Broadcast(s));
                o1 += Avx512BW.MultiplyAddAdjacent(pair, Broadcast(s + sStride));
                o2 += Avx512BW.MultiplyAddAdjacent(pair, Broadcast(s + 2 * sStride));
                o3 += Avx512BW.MultiplyAddAdjacent(pair, Broadcast(s + 3 * sStride));
                byte* v = t + CodeOffset + 2 * p * SubBlockBytes;
                sbyte* xm = x + 32 * p;
                Unpack(v, out Vector512<byte> c0, out Vector512<byte> c1, out Vector512<byte> c2, out Vector512<byte> c3);
                Vector512<short> sc = Pick(pair, 0);
                i0 = Step(i0, c0, c1, c2, c3, sc, xm);
                i1 = Step(i1, c0, c1, c2, c3, sc, xm + stride);
                i2 = Step(i2, c0, c1, c2, c3, sc, xm + 2 * stride);
                i3 = Step(i3, c0, c1, c2, c3, sc, xm + 3 * stride);
                Unpack(v + SubBlockBytes, out c0, out c1, out c2, out c3);
                sc = Pick(pair, 1);
                i0 = Step(i0, c0, c1, c2, c3, sc, xm + 16);
                i1 = Step(i1, c0, c1, c2, c3, sc, xm + stride + 16);
                i2 = Step(i2, c0, c1, c2, c3, sc, xm + 2 * stride + 16);
                i3 = Step(i3, c0, c1, c2, c3, sc, xm + 3 * stride + 16);
            }
            a0 += d * Vector512.Create(xd[b]) * Vector512.ConvertToSingle(i0 - (o0 << 5));
            a1 += d * Vector512.Create(xd[dStride + b]) * Vector512.ConvertToSingle(i1 - (o1 << 5));
            a2 += d * Vector512.Create(xd[2 * dStride + b]) * Vector512.ConvertToSingle(i2 - (o2 << 5));
            a3 += d * Vector512.Create(xd[3 * dStride + b]) * Vector512.ConvertToSingle(i3 - (o3 << 5));
        }
        a0.Store(result);
        a1.Store(result + Rows);
        a2.Store(result + 2 * Rows);
        a3.Store(result + 3 * Rows);
    }

    /// <summary><see cref="OneKernel"/> in 256-bit registers (AVX2): rows 0–7 and 8–15 of each vector as two halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void OneKernel256(byte* group, int superBlocks, sbyte* x, float* xd, short* sums16, float* result)
    {
        bool ahead = Q4KTiles.PrefetchesAhead; // first and once, not in the loop (Q4KTiles.OneLookAhead)
        Vector256<float> sum0 = default, sum1 = default;
        for (int b = 0; b < superBlocks; b++, x += 256, sums16 += 16)
        {
            byte* t = Tile(group, superBlocks, b);
            Vector256<float> d0 = D256(group, b, 0), d1 = D256(group, b, 1);
            Vector256<int> isum0 = default, isum1 = default, offset0 = default, offset1 = default;
            for (int p = 0; p < 8; p++)
            {
                Vector256<short> pair0 = ScalePair256(t, p, 0), pair1 = ScalePair256(t, p, 1);
                Prefetch(t, p, ahead);
                Vector256<short> s = Broadcast256(sums16 + 2 * p);
                offset0 += Avx2.MultiplyAddAdjacent(pair0, s);
                offset1 += Avx2.MultiplyAddAdjacent(pair1, s);
                byte* v = t + CodeOffset + 2 * p * SubBlockBytes;
                sbyte* xm = x + 32 * p;
                for (int e = 0; e < 2; e++, v += SubBlockBytes, xm += 16)
                {
                    Unpack256(v, out Vector256<byte> c0, out Vector256<byte> c1, out Vector256<byte> c2, out Vector256<byte> c3);
                    isum0 = Step256(isum0, c0, c1, c2, c3, Pick256(pair0, e), xm);
                    Unpack256(v + 32, out c0, out c1, out c2, out c3);
                    isum1 = Step256(isum1, c0, c1, c2, c3, Pick256(pair1, e), xm);
                }
            }
            Vector256<float> dx = Vector256.Create(xd[b]);
            sum0 += d0 * dx * Vector256.ConvertToSingle(isum0 - (offset0 << 5));
            sum1 += d1 * dx * Vector256.ConvertToSingle(isum1 - (offset1 << 5));
        }
        sum0.Store(result);
        sum1.Store(result + 8);
    }

    /// <summary><see cref="FourKernel"/> in 256-bit registers for rows 8·<paramref name="half"/> .. + 7 (a pass per
    /// half: the other half's tiles come back from L1), token t's row r in <paramref name="result"/>[16t + r].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void FourKernel256(byte* group, int half, int superBlocks, sbyte* x, int stride, float* xd, short* sums16, float* result)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int sStride = stride / 16, dStride = stride / 256;
        for (int b = 0; b < superBlocks; b++, x += 256, sums16 += 16)
        {
            byte* t = Tile(group, superBlocks, b);
            Vector256<float> d = D256(group, b, half);
            Vector256<int> i0 = default, i1 = default, i2 = default, i3 = default, o0 = default, o1 = default, o2 = default, o3 = default;
            for (int p = 0; p < 8; p++)
            {
                Vector256<short> pair = ScalePair256(t, p, half);
                if (half == 0) PrefetchAlways(t, p);
                short* s = sums16 + 2 * p;
                o0 += Avx2.MultiplyAddAdjacent(pair, Broadcast256(s));
                o1 += Avx2.MultiplyAddAdjacent(pair, Broadcast256(s + sStride));
                o2 += Avx2.MultiplyAddAdjacent(pair, Broadcast256(s + 2 * sStride));
                o3 += Avx2.MultiplyAddAdjacent(pair, Broadcast256(s + 3 * sStride));
                byte* v = t + CodeOffset + 2 * p * SubBlockBytes + 32 * half;
                sbyte* xm = x + 32 * p;
                for (int e = 0; e < 2; e++, v += SubBlockBytes, xm += 16)
                {
                    Unpack256(v, out Vector256<byte> c0, out Vector256<byte> c1, out Vector256<byte> c2, out Vector256<byte> c3);
                    Vector256<short> sc = Pick256(pair, e);
                    i0 = Step256(i0, c0, c1, c2, c3, sc, xm);
                    i1 = Step256(i1, c0, c1, c2, c3, sc, xm + stride);
                    i2 = Step256(i2, c0, c1, c2, c3, sc, xm + 2 * stride);
                    i3 = Step256(i3, c0, c1, c2, c3, sc, xm + 3 * stride);
                }
            }
            a0 += d * Vector256.Create(xd[b]) * Vector256.ConvertToSingle(i0 - (o0 << 5));
            a1 += d * Vector256.Create(xd[dStride + b]) * Vector256.ConvertToSingle(i1 - (o1 << 5));
            a2 += d * Vector256.Create(xd[2 * dStride + b]) * Vector256.ConvertToSingle(i2 - (o2 << 5));
            a3 += d * Vector256.Create(xd[3 * dStride + b]) * Vector256.ConvertToSingle(i3 - (o3 << 5));
        }
        a0.Store(result);
        a1.Store(result + Rows);
        a2.Store(result + 2 * Rows);
        a3.Store(result + 3 * Rows);
    }

    /// <summary><see cref="Step"/> for the eight rows of 256-bit code vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Step256(Vector256<int> acc, Vector256<byte> c0, Vector256<byte> c1, Vector256<byte> c2, Vector256<byte> c3,
        Vector256<short> sc, sbyte* x) =>
        acc + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c0, Broadcast256(x)) + Avx2.MultiplyAddAdjacent(c1, Broadcast256(x + 4)), sc)
            + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c2, Broadcast256(x + 8)) + Avx2.MultiplyAddAdjacent(c3, Broadcast256(x + 12)), sc);

    /// <summary><see cref="Unpack"/> of eight rows: the 32 bytes at <paramref name="v"/> of each of the sub-block's
    /// three vectors (v + 64, v + 128 on).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Unpack256(byte* v, out Vector256<byte> c0, out Vector256<byte> c1, out Vector256<byte> c2, out Vector256<byte> c3)
    {
        Vector256<byte> l0 = Vector256.Load(v), l1 = Vector256.Load(v + 64), h = Vector256.Load(v + 128);
        Vector256<byte> low = Vector256.Create((byte)0x0F), top = Vector256.Create((byte)0x30);
        Vector256<ushort> h16 = h.AsUInt16();
        c0 = (l0 & low) | (Vector256.ShiftLeft(h16, 4).AsByte() & top);
        c1 = (Vector256.ShiftRightLogical(l0.AsUInt16(), 4).AsByte() & low) | (Vector256.ShiftLeft(h16, 2).AsByte() & top);
        c2 = (l1 & low) | (h & top);
        c3 = (Vector256.ShiftRightLogical(l1.AsUInt16(), 4).AsByte() & low) | (Vector256.ShiftRightLogical(h16, 2).AsByte() & top);
    }

    /// <summary><see cref="ScalePair"/> of rows 8·<paramref name="half"/> .. + 7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> ScalePair256(byte* t, int p, int half) =>
        Avx2.ConvertToVector256Int16(Vector128.Load((sbyte*)(t + ScaleOffset + 32 * p + 16 * half)));

    /// <summary><see cref="Pick"/> in 256-bit registers (the same shuffle in each 128-bit lane).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> Pick256(Vector256<short> pair, int e) =>
        Avx2.Shuffle(pair.AsByte(), (e == 0
            ? Vector256.Create(0x01000100u, 0x05040504u, 0x09080908u, 0x0D0C0D0Cu, 0x01000100u, 0x05040504u, 0x09080908u, 0x0D0C0D0Cu)
            : Vector256.Create(0x03020302u, 0x07060706u, 0x0B0A0B0Au, 0x0F0E0F0Eu, 0x03020302u, 0x07060706u, 0x0B0A0B0Au, 0x0F0E0F0Eu)).AsByte()).AsInt16();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<sbyte> Broadcast256(sbyte* x) => Vector256.Create(Unsafe.ReadUnaligned<int>(x)).AsSByte();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> Broadcast256(short* s) => Vector256.Create(Unsafe.ReadUnaligned<int>(s)).AsInt16();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> D256(byte* group, int b, int half) => HalfTable.ToSingle(Vector128.Load(Halves(group, b) + 8 * half));

    /// <summary><paramref name="acc"/> + one token's Σ sc · q · x over a sub-block's sixteen columns (the four code
    /// vectors against the token's four groups of four activations at <paramref name="x"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<int> Step(Vector512<int> acc, Vector512<byte> c0, Vector512<byte> c1, Vector512<byte> c2, Vector512<byte> c3,
        Vector512<short> sc, sbyte* x) =>
        acc + Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c0, Broadcast(x)) + Avx512BW.MultiplyAddAdjacent(c1, Broadcast(x + 4)), sc)
            + Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c2, Broadcast(x + 8)) + Avx512BW.MultiplyAddAdjacent(c3, Broadcast(x + 12)), sc);

    /// <summary>The codes of one sub-block: columns 16m + i, 16m + 4 + i, 16m + 8 + i, 16m + 12 + i (i = 0..3) of the
    /// sixteen rows, byte 4r + i of each vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Unpack(byte* v, out Vector512<byte> c0, out Vector512<byte> c1, out Vector512<byte> c2, out Vector512<byte> c3)
    {
        Vector512<byte> l0 = Vector512.Load(v), l1 = Vector512.Load(v + 64), h = Vector512.Load(v + 128);
        Vector512<byte> low = Vector512.Create((byte)0x0F), top = Vector512.Create((byte)0x30);
        Vector512<ushort> h16 = h.AsUInt16();
        // 16-bit shifts: the bits a byte takes from its neighbour land outside 0x30 (or 0x0F) and are masked away.
        c0 = (l0 & low) | (Vector512.ShiftLeft(h16, 4).AsByte() & top);
        c1 = (Vector512.ShiftRightLogical(l0.AsUInt16(), 4).AsByte() & low) | (Vector512.ShiftLeft(h16, 2).AsByte() & top);
        c2 = (l1 & low) | (h & top);
        c3 = (Vector512.ShiftRightLogical(l1.AsUInt16(), 4).AsByte() & low) | (Vector512.ShiftRightLogical(h16, 2).AsByte() & top);
    }

    /// <summary>An eighth of the tile <see cref="PrefetchAhead"/> bytes on (416 bytes, seven lines from wherever it
    /// starts, so the eight cover every line): prefetch instructions never fault, so past the last tile is harmless.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(byte* t, int p, bool ahead)
    {
        if (ahead) PrefetchAlways(t, p);
    }

    /// <summary><see cref="Prefetch"/> whatever the CPU (the four-token kernel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchAlways(byte* t, int p)
    {
        byte* f = t + PrefetchAhead + 416 * p;
        Q4KTiles.PrefetchFourLines(f);
        Sse.Prefetch0(f + 256);
        Sse.Prefetch0(f + 320);
        Sse.Prefetch0(f + 384);
    }

    /// <summary>Sub-blocks 2p and 2p + 1's scales: row r's two in the int16 halves of 32-bit lane r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> ScalePair(byte* t, int p) => Avx512BW.ConvertToVector512Int16(Vector256.Load((sbyte*)(t + ScaleOffset + 32 * p)));

    /// <summary>Sub-block 2p + e's scale in both int16 halves of each row's lane (a byte shuffle of the pair).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<short> Pick(Vector512<short> pair, int e) =>
        // Within each 32-bit lane, bytes 2e, 2e + 1 twice (vpshufb indexes each 128-bit lane on its own); constants
        // written in place (see the note on vector constants in BlockDots).
        Avx512BW.Shuffle(pair.AsByte(), (e == 0
            ? Vector512.Create(0x01000100u, 0x05040504u, 0x09080908u, 0x0D0C0D0Cu, 0x01000100u, 0x05040504u, 0x09080908u, 0x0D0C0D0Cu,
                0x01000100u, 0x05040504u, 0x09080908u, 0x0D0C0D0Cu, 0x01000100u, 0x05040504u, 0x09080908u, 0x0D0C0D0Cu)
            : Vector512.Create(0x03020302u, 0x07060706u, 0x0B0A0B0Au, 0x0F0E0F0Eu, 0x03020302u, 0x07060706u, 0x0B0A0B0Au, 0x0F0E0F0Eu,
                0x03020302u, 0x07060706u, 0x0B0A0B0Au, 0x0F0E0F0Eu, 0x03020302u, 0x07060706u, 0x0B0A0B0Au, 0x0F0E0F0Eu)).AsByte()).AsInt16();

    /// <summary>Four consecutive activation codes repeated across the vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<sbyte> Broadcast(sbyte* x) => Vector512.Create(Unsafe.ReadUnaligned<int>(x)).AsSByte();

    /// <summary>Two consecutive activation sums per 16 repeated across the vector (an int16 pair per lane).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<short> Broadcast(short* s) => Vector512.Create(Unsafe.ReadUnaligned<int>(s)).AsInt16();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> D(byte* group, int b) => HalfTable.ToSingle(Vector256.Load(Halves(group, b)));
}
