using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Q4_K rows interleaved sixteen at a time, the layout the one- and four-token kernels read (llama.cpp repacks
/// Q4_K for its x86 kernels the same way): in 512-bit registers with AVX-512, else in 256-bit ones (AVX2), the rows
/// 0–7 and 8–15 of each 64-byte vector as two halves, every lane with the same operations (the same bits). GGUF's layout keeps each row's super-block together, so a kernel pays the
/// unpacking of 6-bit scales, the broadcasting of each sub-block scale and a horizontal reduction per row and
/// super-block — about as many instructions as the multiplications, which made one-token Q4_K compute-bound here.
/// A tile holds one super-block (256 columns) of sixteen rows, every value GGUF stores and nothing else:
/// <list type="bullet">
/// <item>bytes [0, 128): sub-block scales, byte 16j + r = row r's 6-bit scale of sub-block j.</item>
/// <item>[128, 256): minimums in pairs, byte 32p + 2r + e = row r's minimum of sub-block 2p + e.</item>
/// <item>[256, 320): d of rows 0..15, then dmin of rows 0..15, as GGUF's fp16.</item>
/// <item>[320, 2368): codes. Vector k (64 bytes) covers columns 8k..8k+7: byte 4r + i holds row r's code of column
/// 8k + i in its low nibble and of column 8k + 4 + i in its high nibble. Masking or shifting a vector gives four
/// consecutive columns of all sixteen rows, so one broadcast 32-bit group of activations multiplies all rows
/// (vpmaddubsw) and each 32-bit lane keeps one row's sums: no horizontal reduction.</item>
/// </list>
/// The kernels read a tile front to back (scales first), so consecutive tiles are one sequential stream for the
/// hardware prefetcher. With the scales after the codes every sub-block's scale load jumped ahead of the codes; that
/// layout needed software prefetching and still streamed the experts' gate and up tiles at 20–24 GB/s against
/// 29–31 with the scales first and no prefetching at all (the model's weights, 2 threads, same runs); v2-lite-8
/// decode 38.1 → 41.7 tok/s (medians of three alternating runs). Prefetching three tiles ahead on top of that order
/// gains another sixth (<see cref="PrefetchAhead{TL}"/>).
/// 2368 bytes for 16 × 144 stored by GGUF (+2.8%: scales and minimums unpacked from 6 to 8 bits).
/// <para>The arithmetic is <see cref="Q4K.Scalar"/>'s: exact integer sums I = Σ_j sc_j · Σ q·x (the u4 × s8 pair sums of
/// a sub-block add up in int16: 16 products ≤ 16 · 15 · 127 = 30480) and M = Σ_j m_j · Σx_j, then per super-block
/// A = fma(I, d·dx, A) and B = fma(M, dmin·dx, B), result A − B — the same bits as every other Q4_K path.</para>
/// <para>Q5_K is Q4_K with a fifth bit on every code, and its tiles (<see cref="Q5KTiles"/>) are these with each
/// sub-block's 256 code bytes preceded by 64 bytes of fifth bits (<see cref="IKTileLayout"/>); the kernels here serve
/// both, compiled once per layout.</para></summary>
internal static unsafe class Q4KTiles
{
    public const int Rows = 16, Bytes = 2368;
    private const int ScaleOffset = 0, MinOffset = 128, HalfOffset = 256, CodeOffset = 320;

    /// <summary>Bytes of one tile (a super-block of sixteen rows) in layout <typeparamref name="TL"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int TileBytes<TL>() where TL : struct, IKTileLayout => TL.FifthBits ? CodeOffset + 8 * 320 : Bytes;

    /// <summary>Where sub-block <paramref name="j"/>'s fifth bits start (its codes follow them): 320 bytes a sub-block
    /// with fifth bits, 256 without. (Each of these helpers reads the layout itself: one that called another was
    /// left as a call in the kernels, which halved the four-token kernel's speed in cache.)</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SubBlockOffset<TL>(int j) where TL : struct, IKTileLayout => CodeOffset + j * (TL.FifthBits ? 320 : 256);

    /// <summary>Where sub-block <paramref name="j"/>'s first code vector starts.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int CodeStart<TL>(int j) where TL : struct, IKTileLayout => TL.FifthBits ? CodeOffset + j * 320 + 64 : CodeOffset + j * 256;

    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>How far ahead of the tile being multiplied its lines are prefetched: three tiles. One-token products
    /// over 390 MB went 64–70 → 74–82 GB/s on two threads and 39–40 → 45–46 on one (Zen 5, medians of 37 passes,
    /// variants in turn in one process); one, two, four and five tiles ahead were slower. The one-token kernels take
    /// <see cref="OneLookAhead{TL}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PrefetchAhead<TL>() where TL : struct, IKTileLayout => TL.FifthBits ? 3 * (CodeOffset + 8 * 320) : 3 * Bytes;

    /// <summary>Whether the Q4_K and Q6_K one-token kernels prefetch ahead (<see cref="OneLookAhead{TL}"/>; Q6_K its own distance):
    /// everywhere but on AMD Zen 4, where the same prefetches made decode slower (v2-lite-8 Q4_K_M decode, the two variants
    /// alternating, three pairs each): one thread 63–67% of the read bound with them, 66–71% without (+3–5% tok/s in every
    /// pair); two threads +2–7% in every pair. Zen 5 is where they gained the sixth above; on Zen 3 (no AVX-512, so the
    /// 256-bit kernels) one-token Q4_K products over 155 MB went 16.5–16.7 → 23.0–23.1 GB/s on one thread and 28.1–28.2 →
    /// 32.7–33.5 on two (<c>bench stream Q4_K</c>, two runs each). The four-token kernels prefetch everywhere: four times
    /// the arithmetic per tile leaves the hardware prefetcher behind (Zen 4, four tokens over 64 expert matrices of Q4_K
    /// from memory: 60–68 → 109–110 GMAC/s with it).</summary>
    internal static readonly bool PrefetchesAhead = CpuModel.Prefetch(!CpuModel.IsZen4);

    /// <summary>Writes row <paramref name="r"/> (0..15) of the tile group at <paramref name="group"/> from GGUF blocks.
    /// Rows of one group touch disjoint bytes, so rows can be written from several threads.</summary>
    public static void SetRow(ReadOnlySpan<BlockQ4K> row, byte* group, int r)
    {
        for (int b = 0; b < row.Length; b++)
        {
            BlockQ4K blk = row[b];
            SetTileRow<Q4KLayout>(group + (long)b * Bytes, r, blk.D, blk.DMin, ref Unsafe.As<BlockQ4K.Scales, byte>(ref blk.Sc),
                ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs), ref Unsafe.NullRef<byte>());
        }
    }

    /// <summary>Row <paramref name="r"/> of the tile group as GGUF blocks (the exact inverse of <see cref="SetRow"/>).</summary>
    public static void GetRow(byte* group, int r, Span<BlockQ4K> row)
    {
        for (int b = 0; b < row.Length; b++)
        {
            ref BlockQ4K blk = ref row[b];
            blk = default;
            GetTileRow<Q4KLayout>(group + (long)b * Bytes, r, out blk.D, out blk.DMin, ref Unsafe.As<BlockQ4K.Scales, byte>(ref blk.Sc),
                ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs), ref Unsafe.NullRef<byte>());
        }
    }

    /// <summary>Row <paramref name="r"/> of one tile from a block's fields: its 128 bytes of nibbles
    /// <paramref name="qs"/> and, where the layout has them, its 32 bytes of fifth bits <paramref name="qh"/> (Q5_K:
    /// bit j of byte l is the fifth bit of column 32j + l). In the tile, byte 4r + i of sub-block j's 64 bytes of
    /// fifth bits holds, for each of its code vectors k, those of columns 32j + 8k + i (bit k) and 32j + 8k + 4 + i
    /// (bit 4 + k): the columns whose nibbles share byte 4r + i of code vector k, low and high.</summary>
    internal static void SetTileRow<TL>(byte* t, int r, ushort d, ushort dmin, ref byte scales, ref byte qs, ref byte qh)
        where TL : struct, IKTileLayout
    {
        // Eight GGUF bytes from 32g + j hold columns 64g + j.. (low nibbles) and 64g + 32 + j.. (high nibbles):
        // two of the tile's 32-bit lanes each.
        for (int g = 0; g < 4; g++)
            for (int j = 0; j < 32; j += 8)
            {
                ulong u = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref qs, 32 * g + j));
                ulong low = u & 0x0F0F0F0F0F0F0F0FUL, high = (u >> 4) & 0x0F0F0F0F0F0F0F0FUL;
                int k = (64 * g + j) / 8;
                *(uint*)(t + CodeAt<TL>(k) + r * 4) = (uint)low | (uint)(low >> 32) << 4;
                *(uint*)(t + CodeAt<TL>(k + 4) + r * 4) = (uint)high | (uint)(high >> 32) << 4;
            }
        if (TL.FifthBits)
            for (int j = 0; j < 8; j++)
                for (int i = 0; i < 4; i++)
                {
                    int v = 0;
                    for (int k = 0; k < 4; k++)
                        v |= (Unsafe.Add(ref qh, 8 * k + i) >> j & 1) << k | (Unsafe.Add(ref qh, 8 * k + 4 + i) >> j & 1) << (4 + k);
                    t[SubBlockOffset<TL>(j) + 4 * r + i] = (byte)v;
                }
        for (int j = 0; j < 8; j++)
        {
            var (sc, m) = KQuants.ScaleMin6(ref scales, j);
            t[ScaleOffset + j * 16 + r] = (byte)sc;
            t[MinOffset + j / 2 * 32 + r * 2 + j % 2] = (byte)m;
        }
        ((ushort*)(t + HalfOffset))[r] = d;
        ((ushort*)(t + HalfOffset))[16 + r] = dmin;
    }

    /// <summary>The exact inverse of <see cref="SetTileRow{TL}"/>, into zeroed fields.</summary>
    internal static void GetTileRow<TL>(byte* t, int r, out ushort d, out ushort dmin, ref byte scales, ref byte qs, ref byte qh)
        where TL : struct, IKTileLayout
    {
        for (int k = 0; k < 32; k++)
            for (int i = 0; i < 4; i++)
            {
                byte v = t[CodeAt<TL>(k) + r * 4 + i];
                SetCode(ref qs, 8 * k + i, v & 0xF);
                SetCode(ref qs, 8 * k + 4 + i, v >> 4);
            }
        if (TL.FifthBits)
            for (int j = 0; j < 8; j++)
                for (int i = 0; i < 4; i++)
                {
                    byte v = t[SubBlockOffset<TL>(j) + 4 * r + i];
                    for (int k = 0; k < 4; k++)
                    {
                        Unsafe.Add(ref qh, 8 * k + i) |= (byte)((v >> k & 1) << j);
                        Unsafe.Add(ref qh, 8 * k + 4 + i) |= (byte)((v >> (4 + k) & 1) << j);
                    }
                }
        Span<byte> packed = MemoryMarshal.CreateSpan(ref scales, 12);
        for (int j = 0; j < 8; j++)
            KQuants.SetScaleMin6(packed, j, t[ScaleOffset + j * 16 + r], t[MinOffset + j / 2 * 32 + r * 2 + j % 2]);
        d = ((ushort*)(t + HalfOffset))[r];
        dmin = ((ushort*)(t + HalfOffset))[16 + r];
    }

    /// <summary>Where code vector <paramref name="k"/> (columns 8k..8k + 7, 0 ≤ k &lt; 32) starts in a tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int CodeAt<TL>(int k) where TL : struct, IKTileLayout =>
        (TL.FifthBits ? CodeOffset + k / 4 * 320 + 64 : CodeOffset + k / 4 * 256) + k % 4 * 64;

    // GGUF: within each 64 columns, byte l holds column l (low nibble) and 32 + l (high nibble).
    private static void SetCode(ref byte qs, int c, int q) => Unsafe.Add(ref qs, c / 64 * 32 + c % 32) |= (byte)(q << (c % 64 / 32 * 4));

    /// <summary>Token <paramref name="token"/> of <paramref name="a"/> (quantised per 256) against the sixteen rows of
    /// the tile group at <paramref name="group"/>: row r's result in <paramref name="lanes"/>[r].</summary>
    public static void One(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes) =>
        One<Q4KLayout>(group, superBlocks, a, token, lanes);

    /// <summary>Tokens <paramref name="token"/> .. + 3 at once: token t's row r in <paramref name="lanes"/>[16t + r].</summary>
    public static void Four(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes) =>
        Four<Q4KLayout>(group, superBlocks, a, token, lanes);

    /// <summary><see cref="One"/> for tiles in layout <typeparamref name="TL"/>.</summary>
    internal static void One<TL>(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes) where TL : struct, IKTileLayout
    {
        CheckTokens(a, superBlocks, token + 1);
        fixed (sbyte* q = a.Q) fixed (float* d = a.D) fixed (short* s = a.BlockSum)
        {
            sbyte* x = q + (long)token * superBlocks * 256;
            if (Avx512BW.IsSupported) OneKernel<TL>(group, superBlocks, x, d + token * superBlocks, s + token * superBlocks * 8, lanes);
            else OneKernel256<TL>(group, superBlocks, x, d + token * superBlocks, s + token * superBlocks * 8, lanes);
        }
    }

    /// <summary><see cref="Four"/> for tiles in layout <typeparamref name="TL"/>.</summary>
    internal static void Four<TL>(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes) where TL : struct, IKTileLayout
    {
        CheckTokens(a, superBlocks, token + 4);
        fixed (sbyte* q = a.Q) fixed (float* d = a.D) fixed (short* s = a.BlockSum)
        {
            sbyte* x = q + (long)token * superBlocks * 256;
            if (Avx512BW.IsSupported) FourKernel<TL>(group, superBlocks, x, superBlocks * 256, d + token * superBlocks, s + token * superBlocks * 8, lanes);
            else
                for (int half = 0; half < 2; half++)
                    FourKernel256<TL>(group, half, superBlocks, x, superBlocks * 256, d + token * superBlocks, s + token * superBlocks * 8, lanes + 8 * half);
        }
    }

    private static void CheckTokens(QuantizedActivations a, int superBlocks, int tokens)
    {
        if (a.Q.Length < (long)tokens * superBlocks * 256 || a.D.Length < tokens * superBlocks || a.BlockSum.Length < tokens * superBlocks * 8)
            ThrowHelper.TooShort(nameof(a), (long)tokens * superBlocks * 256, a.Q.Length);
    }

    /// <summary>One token: the sixteen rows' results into <paramref name="result"/>. With fifth bits a sub-block's
    /// pair sums are widened two code vectors at a time: eight products of 31 · 127 fit int16 where sixteen do not.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)] // compiled optimised at once, on its own: inlined into a tier-1 caller, its helpers were left as calls
    private static void OneKernel<TL>(byte* group, int superBlocks, sbyte* x, float* xd, short* bsum, float* result) where TL : struct, IKTileLayout
    {
        int ahead = OneLookAhead<TL>(); // first, before any vector is live
        Vector512<float> sumA = default, sumB = default;
        for (int b = 0; b < superBlocks; b++, x += 256, bsum += 8)
        {
            byte* t = group + (long)b * TileBytes<TL>();
            Vector512<int> isum = default;
            for (int j = 0; j < 8; j++)
            {
                Prefetch<TL>(t, j, ahead);
                // The sub-block's four code vectors written out: as a loop of four, the JIT kept its counter and
                // addressing in the loop (Four: 230 -> 246 GMAC/s in L2, one thread).
                byte* c = t + CodeStart<TL>(j);
                Vector512<byte> h = TL.FifthBits ? Vector512.Load(t + SubBlockOffset<TL>(j)) : default;
                sbyte* xj = x + 32 * j;
                if (TL.FifthBits)
                {
                    Vector512<short> sc = Scale(t, j);
                    isum += Avx512BW.MultiplyAddAdjacent(Step<TL>(c, xj, h, 0) + Step<TL>(c + 64, xj + 8, h, 1), sc)
                        + Avx512BW.MultiplyAddAdjacent(Step<TL>(c + 128, xj + 16, h, 2) + Step<TL>(c + 192, xj + 24, h, 3), sc);
                }
                else
                {
                    Vector512<short> acc = Step<TL>(c, xj, h, 0) + Step<TL>(c + 64, xj + 8, h, 1) + Step<TL>(c + 128, xj + 16, h, 2) + Step<TL>(c + 192, xj + 24, h, 3);
                    isum += Avx512BW.MultiplyAddAdjacent(acc, Scale(t, j));
                }
            }
            Vector512<float> dx = Vector512.Create(xd[b]);
            sumA = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(isum), D(t) * dx, sumA);
            sumB = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(Mins(t, bsum)), DMin(t) * dx, sumB);
        }
        (sumA - sumB).Store(result);
    }

    /// <summary>Four tokens <paramref name="stride"/> codes apart: each code vector is loaded and unpacked once for
    /// all four; every token's lanes get exactly <see cref="OneKernel{TL}"/>'s arithmetic.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)] // compiled optimised at once, on its own: inlined into a tier-1 caller, its helpers were left as calls
    private static void FourKernel<TL>(byte* group, int superBlocks, sbyte* x, int stride, float* xd, short* bsum, float* result) where TL : struct, IKTileLayout
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        int sbStride = stride / 32;
        for (int b = 0; b < superBlocks; b++, x += 256, bsum += 8)
        {
            byte* t = group + (long)b * TileBytes<TL>();
            Vector512<int> i0 = default, i1 = default, i2 = default, i3 = default;
            for (int j = 0; j < 8; j++)
            {
                PrefetchAlways<TL>(t, j);
                Vector512<short> s0 = default, s1 = default, s2 = default, s3 = default;
                byte* c = t + CodeStart<TL>(j);
                Vector512<byte> h = TL.FifthBits ? Vector512.Load(t + SubBlockOffset<TL>(j)) : default;
                sbyte* xj = x + 32 * j;
                Vector512<short> sc = Scale(t, j);
                Step4<TL>(c, xj, stride, h, 0, ref s0, ref s1, ref s2, ref s3);
                Step4<TL>(c + 64, xj + 8, stride, h, 1, ref s0, ref s1, ref s2, ref s3);
                if (TL.FifthBits)
                {
                    i0 += Avx512BW.MultiplyAddAdjacent(s0, sc);
                    i1 += Avx512BW.MultiplyAddAdjacent(s1, sc);
                    i2 += Avx512BW.MultiplyAddAdjacent(s2, sc);
                    i3 += Avx512BW.MultiplyAddAdjacent(s3, sc);
                    s0 = s1 = s2 = s3 = default;
                }
                Step4<TL>(c + 128, xj + 16, stride, h, 2, ref s0, ref s1, ref s2, ref s3);
                Step4<TL>(c + 192, xj + 24, stride, h, 3, ref s0, ref s1, ref s2, ref s3);
                i0 += Avx512BW.MultiplyAddAdjacent(s0, sc);
                i1 += Avx512BW.MultiplyAddAdjacent(s1, sc);
                i2 += Avx512BW.MultiplyAddAdjacent(s2, sc);
                i3 += Avx512BW.MultiplyAddAdjacent(s3, sc);
            }
            Vector512<float> d = D(t), dm = DMin(t);
            int superBlocksPerToken = stride / 256;
            Vector512<float> x0 = Vector512.Create(xd[b]), x1 = Vector512.Create(xd[superBlocksPerToken + b]);
            Vector512<float> x2 = Vector512.Create(xd[2 * superBlocksPerToken + b]), x3 = Vector512.Create(xd[3 * superBlocksPerToken + b]);
            a0 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i0), d * x0, a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i1), d * x1, a1);
            a2 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i2), d * x2, a2);
            a3 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i3), d * x3, a3);
            b0 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(Mins(t, bsum)), dm * x0, b0);
            b1 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(Mins(t, bsum + sbStride)), dm * x1, b1);
            b2 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(Mins(t, bsum + 2 * sbStride)), dm * x2, b2);
            b3 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(Mins(t, bsum + 3 * sbStride)), dm * x3, b3);
        }
        (a0 - b0).Store(result);
        (a1 - b1).Store(result + Rows);
        (a2 - b2).Store(result + 2 * Rows);
        (a3 - b3).Store(result + 3 * Rows);
    }

    /// <summary><see cref="OneKernel{TL}"/> in 256-bit registers (AVX2): rows 0–7 and 8–15 of each vector as two halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void OneKernel256<TL>(byte* group, int superBlocks, sbyte* x, float* xd, short* bsum, float* result) where TL : struct, IKTileLayout
    {
        int ahead = OneLookAhead<TL>(); // first, before any vector is live
        Vector256<float> sumA0 = default, sumA1 = default, sumB0 = default, sumB1 = default;
        for (int b = 0; b < superBlocks; b++, x += 256, bsum += 8)
        {
            byte* t = group + (long)b * TileBytes<TL>();
            Vector256<int> isum0 = default, isum1 = default;
            for (int j = 0; j < 8; j++)
            {
                Prefetch<TL>(t, j, ahead);
                byte* c = t + CodeStart<TL>(j);
                byte* hj = t + SubBlockOffset<TL>(j);
                Vector256<byte> h0 = TL.FifthBits ? Vector256.Load(hj) : default, h1 = TL.FifthBits ? Vector256.Load(hj + 32) : default;
                sbyte* xj = x + 32 * j;
                Vector256<short> sc0 = Scale256(t, j, 0), sc1 = Scale256(t, j, 1);
                if (TL.FifthBits)
                {
                    isum0 += Avx2.MultiplyAddAdjacent(Step256<TL>(c, xj, h0, 0) + Step256<TL>(c + 64, xj + 8, h0, 1), sc0)
                        + Avx2.MultiplyAddAdjacent(Step256<TL>(c + 128, xj + 16, h0, 2) + Step256<TL>(c + 192, xj + 24, h0, 3), sc0);
                    isum1 += Avx2.MultiplyAddAdjacent(Step256<TL>(c + 32, xj, h1, 0) + Step256<TL>(c + 96, xj + 8, h1, 1), sc1)
                        + Avx2.MultiplyAddAdjacent(Step256<TL>(c + 160, xj + 16, h1, 2) + Step256<TL>(c + 224, xj + 24, h1, 3), sc1);
                }
                else
                {
                    Vector256<short> acc0 = Step256<TL>(c, xj, h0, 0) + Step256<TL>(c + 64, xj + 8, h0, 1) + Step256<TL>(c + 128, xj + 16, h0, 2) + Step256<TL>(c + 192, xj + 24, h0, 3);
                    Vector256<short> acc1 = Step256<TL>(c + 32, xj, h1, 0) + Step256<TL>(c + 96, xj + 8, h1, 1) + Step256<TL>(c + 160, xj + 16, h1, 2) + Step256<TL>(c + 224, xj + 24, h1, 3);
                    isum0 += Avx2.MultiplyAddAdjacent(acc0, sc0);
                    isum1 += Avx2.MultiplyAddAdjacent(acc1, sc1);
                }
            }
            Vector256<float> dx = Vector256.Create(xd[b]);
            sumA0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum0), D256(t, 0) * dx, sumA0);
            sumA1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum1), D256(t, 1) * dx, sumA1);
            sumB0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Mins256(t, bsum, 0)), DMin256(t, 0) * dx, sumB0);
            sumB1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Mins256(t, bsum, 1)), DMin256(t, 1) * dx, sumB1);
        }
        (sumA0 - sumB0).Store(result);
        (sumA1 - sumB1).Store(result + 8);
    }

    /// <summary><see cref="FourKernel{TL}"/> in 256-bit registers for rows 8·<paramref name="half"/> .. + 7 (a pass per
    /// half: the other half's tiles come back from L1), token t's row r in <paramref name="result"/>[16t + r].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void FourKernel256<TL>(byte* group, int half, int superBlocks, sbyte* x, int stride, float* xd, short* bsum, float* result) where TL : struct, IKTileLayout
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        int sbStride = stride / 32, superBlocksPerToken = stride / 256;
        for (int b = 0; b < superBlocks; b++, x += 256, bsum += 8)
        {
            byte* t = group + (long)b * TileBytes<TL>();
            Vector256<int> i0 = default, i1 = default, i2 = default, i3 = default;
            for (int j = 0; j < 8; j++)
            {
                if (half == 0) PrefetchAlways<TL>(t, j);
                Vector256<short> s0 = default, s1 = default, s2 = default, s3 = default;
                byte* c = t + CodeStart<TL>(j) + 32 * half;
                Vector256<byte> h = TL.FifthBits ? Vector256.Load(t + SubBlockOffset<TL>(j) + 32 * half) : default;
                sbyte* xj = x + 32 * j;
                Vector256<short> sc = Scale256(t, j, half);
                for (int k = 0; k < 4; k++)
                {
                    Codes256<TL>(c + 64 * k, h, k, out Vector256<byte> c0, out Vector256<byte> c1);
                    sbyte* xk = xj + 8 * k;
                    s0 += Avx2.MultiplyAddAdjacent(c0, Broadcast256(xk)) + Avx2.MultiplyAddAdjacent(c1, Broadcast256(xk + 4));
                    s1 += Avx2.MultiplyAddAdjacent(c0, Broadcast256(xk + stride)) + Avx2.MultiplyAddAdjacent(c1, Broadcast256(xk + stride + 4));
                    s2 += Avx2.MultiplyAddAdjacent(c0, Broadcast256(xk + 2 * stride)) + Avx2.MultiplyAddAdjacent(c1, Broadcast256(xk + 2 * stride + 4));
                    s3 += Avx2.MultiplyAddAdjacent(c0, Broadcast256(xk + 3 * stride)) + Avx2.MultiplyAddAdjacent(c1, Broadcast256(xk + 3 * stride + 4));
                    if (TL.FifthBits && k % 2 == 1)
                    {
                        i0 += Avx2.MultiplyAddAdjacent(s0, sc);
                        i1 += Avx2.MultiplyAddAdjacent(s1, sc);
                        i2 += Avx2.MultiplyAddAdjacent(s2, sc);
                        i3 += Avx2.MultiplyAddAdjacent(s3, sc);
                        s0 = s1 = s2 = s3 = default;
                    }
                }
                if (!TL.FifthBits)
                {
                    i0 += Avx2.MultiplyAddAdjacent(s0, sc);
                    i1 += Avx2.MultiplyAddAdjacent(s1, sc);
                    i2 += Avx2.MultiplyAddAdjacent(s2, sc);
                    i3 += Avx2.MultiplyAddAdjacent(s3, sc);
                }
            }
            Vector256<float> d = D256(t, half), dm = DMin256(t, half);
            Vector256<float> x0 = Vector256.Create(xd[b]), x1 = Vector256.Create(xd[superBlocksPerToken + b]);
            Vector256<float> x2 = Vector256.Create(xd[2 * superBlocksPerToken + b]), x3 = Vector256.Create(xd[3 * superBlocksPerToken + b]);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i0), d * x0, a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i1), d * x1, a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i2), d * x2, a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i3), d * x3, a3);
            b0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Mins256(t, bsum, half)), dm * x0, b0);
            b1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Mins256(t, bsum + sbStride, half)), dm * x1, b1);
            b2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Mins256(t, bsum + 2 * sbStride, half)), dm * x2, b2);
            b3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Mins256(t, bsum + 3 * sbStride, half)), dm * x3, b3);
        }
        (a0 - b0).Store(result);
        (a1 - b1).Store(result + Rows);
        (a2 - b2).Store(result + 2 * Rows);
        (a3 - b3).Store(result + 3 * Rows);
    }

    /// <summary><see cref="Step{TL}"/> for the eight rows of the 32 bytes at <paramref name="c"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Step256<TL>(byte* c, sbyte* x, Vector256<byte> h, int k) where TL : struct, IKTileLayout
    {
        Codes256<TL>(c, h, k, out Vector256<byte> c0, out Vector256<byte> c1);
        return Avx2.MultiplyAddAdjacent(c0, Broadcast256(x)) + Avx2.MultiplyAddAdjacent(c1, Broadcast256(x + 4));
    }

    /// <summary><see cref="Codes{TL}"/> for the eight rows of the 32 bytes at <paramref name="v"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Codes256<TL>(byte* v, Vector256<byte> h, int k, out Vector256<byte> low, out Vector256<byte> high) where TL : struct, IKTileLayout
    {
        Vector256<byte> raw = Vector256.Load(v), mask = Vector256.Create((byte)0x0F);
        low = raw & mask;
        high = Vector256.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & mask;
        if (TL.FifthBits)
        {
            low |= BitToFour(h.AsUInt16(), k).AsByte() & Vector256.Create((byte)0x10);
            high |= BitToFour(h.AsUInt16(), 4 + k).AsByte() & Vector256.Create((byte)0x10);
        }
    }

    /// <summary><paramref name="h"/> shifted so that bit <paramref name="bit"/> of each byte lands on bit 4 (a
    /// constant shift of 16-bit lanes: what crosses into the other byte of a lane lands on bits 0..3 or 5..7, which
    /// the caller masks off).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<ushort> BitToFour(Vector256<ushort> h, int bit) =>
        bit < 4 ? Vector256.ShiftLeft(h, 4 - bit) : bit > 4 ? Vector256.ShiftRightLogical(h, bit - 4) : h;

    /// <summary><see cref="BitToFour(Vector256{ushort}, int)"/> in 512-bit registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<ushort> BitToFour(Vector512<ushort> h, int bit) =>
        bit < 4 ? Vector512.ShiftLeft(h, 4 - bit) : bit > 4 ? Vector512.ShiftRightLogical(h, bit - 4) : h;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Broadcast256(sbyte* x) => Vector256.Create(Unsafe.ReadUnaligned<int>(x)).AsSByte();

    /// <summary><see cref="Scale"/> of rows 8·<paramref name="half"/> .. + 7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Scale256(byte* t, int j, int half)
    {
        Vector256<int> sc = Avx2.ConvertToVector256Int32(t + ScaleOffset + j * 16 + 8 * half);
        return (sc | (sc << 16)).AsInt16();
    }

    /// <summary><see cref="Mins"/> of rows 8·<paramref name="half"/> .. + 7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Mins256(byte* t, short* bsum, int half)
    {
        byte* m = t + MinOffset + 16 * half;
        return Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.Load(m)), Vector256.Create(Unsafe.ReadUnaligned<int>(bsum)).AsInt16())
            + Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.Load(m + 32)), Vector256.Create(Unsafe.ReadUnaligned<int>(bsum + 2)).AsInt16())
            + Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.Load(m + 64)), Vector256.Create(Unsafe.ReadUnaligned<int>(bsum + 4)).AsInt16())
            + Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.Load(m + 96)), Vector256.Create(Unsafe.ReadUnaligned<int>(bsum + 6)).AsInt16());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> D256(byte* t, int half) => HalfTable.ToSingle(Vector128.Load((ushort*)(t + HalfOffset) + 8 * half));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> DMin256(byte* t, int half) => HalfTable.ToSingle(Vector128.Load((ushort*)(t + HalfOffset) + 16 + 8 * half));

    /// <summary>One token's pair sums of code vector <paramref name="c"/> (columns 8k..8k + 7 of the sixteen rows)
    /// against its eight activations at <paramref name="x"/>; <paramref name="h"/> and <paramref name="k"/> as for
    /// <see cref="Codes{TL}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> Step<TL>(byte* c, sbyte* x, Vector512<byte> h, int k) where TL : struct, IKTileLayout
    {
        Codes<TL>(c, h, k, out Vector512<byte> c0, out Vector512<byte> c1);
        return Avx512BW.MultiplyAddAdjacent(c0, Broadcast(x)) + Avx512BW.MultiplyAddAdjacent(c1, Broadcast(x + 4));
    }

    /// <summary><see cref="Step{TL}"/> for four tokens <paramref name="stride"/> codes apart, the code vector unpacked once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step4<TL>(byte* c, sbyte* x, int stride, Vector512<byte> h, int k,
        ref Vector512<short> s0, ref Vector512<short> s1, ref Vector512<short> s2, ref Vector512<short> s3) where TL : struct, IKTileLayout
    {
        Codes<TL>(c, h, k, out Vector512<byte> c0, out Vector512<byte> c1);
        s0 += Avx512BW.MultiplyAddAdjacent(c0, Broadcast(x)) + Avx512BW.MultiplyAddAdjacent(c1, Broadcast(x + 4));
        s1 += Avx512BW.MultiplyAddAdjacent(c0, Broadcast(x + stride)) + Avx512BW.MultiplyAddAdjacent(c1, Broadcast(x + stride + 4));
        s2 += Avx512BW.MultiplyAddAdjacent(c0, Broadcast(x + 2 * stride)) + Avx512BW.MultiplyAddAdjacent(c1, Broadcast(x + 2 * stride + 4));
        s3 += Avx512BW.MultiplyAddAdjacent(c0, Broadcast(x + 3 * stride)) + Avx512BW.MultiplyAddAdjacent(c1, Broadcast(x + 3 * stride + 4));
    }

    /// <summary>How many tiles ahead the one-token kernels prefetch: three, as <see cref="PrefetchAhead{TL}"/>, but six on
    /// AMD Zen 3 (Q5_K's tiles take the same counts, not measured on their own).
    /// There one-token Q4_K products over 160 MB of [1408, 2048] matrices (<c>bench stream</c>, the distances alternating
    /// pass by pass in one process, four runs) read 2–8% more on two threads six tiles ahead than three (34.9 → 37.8, 34.6
    /// → 36.7, 33.2 → 34.1, 33.6 → 34.2 GB/s) and −2% to +5% on one; eight to sixteen gained nothing on two threads that
    /// they did not lose on one (docs/benchmarks.md, Zen 3). Q4_K_M decode on two threads, the two distances toggled run by
    /// run in one process (v2-lite-8, runs of 64 tokens, three times): medians 48.2 → 51.3, 44.7 → 46.8 and, an hour later
    /// with the host slower, 43.7 → 43.2 tok/s; on one thread 29.4 → 29.9 and 24.0 → 23.4. Q6_K's look-ahead (two of its
    /// tiles) gained nothing from three, four or six there.</summary>
    private static readonly int OneAheadTiles = CpuModel.IsZen3 ? 6 : 3;

    /// <summary>An eighth of the tile <see cref="OneLookAhead{TL}"/> bytes on (prefetch instructions never fault, so
    /// past the last tile is harmless).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch<TL>(byte* t, int j, int ahead) where TL : struct, IKTileLayout
    {
        if (ahead != 0) PrefetchEighth<TL>(t + ahead, j);
    }

    /// <summary>The one-token kernels' look-ahead in bytes, 0 for none, which they read once on entry (as the Q6_K and
    /// Q8_0 ones read theirs): a kernel compiled at once (<c>AggressiveOptimization</c>) before the class's static fields
    /// are set reads a field through a class-initialisation check that may call the runtime, and with that check in the
    /// loop the JIT kept the 256-bit kernel's sums on the stack, stored and reloaded every sub-block (the rule for
    /// constants in BlockDots). Whether it did depended on what had touched the class first: `dss` decode got the slow
    /// code, `bench stream` (which prints the paths first) the fast. Zen 3, `bench stream --in-cache Q4_K` with the
    /// paths line left out, three rounds alternating: 33.3–33.6 → 35.1–35.7 GB/s on one thread.</summary>
    internal static int OneLookAhead<TL>() where TL : struct, IKTileLayout => PrefetchesAhead ? OneAheadTiles * TileBytes<TL>() : 0;

    /// <summary>An eighth of the tile <see cref="PrefetchAhead{TL}"/> bytes on, whatever the CPU (the four-token kernels).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchAlways<TL>(byte* t, int j) where TL : struct, IKTileLayout => PrefetchEighth<TL>(t + PrefetchAhead<TL>(), j);

    /// <summary>Eighth <paramref name="j"/> of the tile at <paramref name="tile"/>: the lines from an eighth of its
    /// bytes · j on that cover the eighth wherever it starts (Q4_K: 296 bytes, five lines; Q5_K: 360, six).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchEighth<TL>(byte* tile, int j) where TL : struct, IKTileLayout
    {
        byte* f = tile + TileBytes<TL>() / 8 * j;
        PrefetchFourLines(f);
        Sse.Prefetch0(f + 256);
        if (TL.FifthBits) Sse.Prefetch0(f + 320);
    }

    /// <summary>Prefetches the four cache lines from <paramref name="start"/> on (the tile kernels' look-ahead; written
    /// out, as a loop of prefetches cost the one-token kernels a fifth of their speed in cache).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void PrefetchFourLines(byte* start)
    {
        Sse.Prefetch0(start);
        Sse.Prefetch0(start + 64);
        Sse.Prefetch0(start + 128);
        Sse.Prefetch0(start + 192);
    }

    /// <summary>The codes of a code vector: columns 8k..8k+3 and 8k+4..8k+7 of the sixteen rows. With fifth bits,
    /// <paramref name="h"/> is the sub-block's 64 bytes of them and <paramref name="k"/> (0..3, a constant) the code
    /// vector's place in the sub-block: bit k of each byte goes onto the low nibbles, bit 4 + k onto the high ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Codes<TL>(byte* v, Vector512<byte> h, int k, out Vector512<byte> low, out Vector512<byte> high) where TL : struct, IKTileLayout
    {
        Vector512<byte> raw = Vector512.Load(v), mask = Vector512.Create((byte)0x0F);
        low = raw & mask;
        high = Vector512.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & mask;
        if (TL.FifthBits)
        {
            low |= BitToFour(h.AsUInt16(), k).AsByte() & Vector512.Create((byte)0x10);
            high |= BitToFour(h.AsUInt16(), 4 + k).AsByte() & Vector512.Create((byte)0x10);
        }
    }

    /// <summary>Four consecutive activation codes repeated across the vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<sbyte> Broadcast(sbyte* x) => Vector512.Create(Unsafe.ReadUnaligned<int>(x)).AsSByte();

    /// <summary>Sub-block j's scale of each row in both int16 halves of the row's 32-bit lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> Scale(byte* t, int j)
    {
        Vector512<int> sc = Avx512F.ConvertToVector512Int32(Vector128.Load(t + ScaleOffset + j * 16));
        return (sc | (sc << 16)).AsInt16();
    }

    /// <summary>Σ_j m_j · Σx_j per row (exact: |Σx_j| ≤ 32 · 127, m ≤ 63).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Mins(byte* t, short* bsum) =>
        Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(t + MinOffset)), Vector512.Create(Unsafe.ReadUnaligned<int>(bsum)).AsInt16())
        + Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(t + MinOffset + 32)), Vector512.Create(Unsafe.ReadUnaligned<int>(bsum + 2)).AsInt16())
        + Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(t + MinOffset + 64)), Vector512.Create(Unsafe.ReadUnaligned<int>(bsum + 4)).AsInt16())
        + Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(t + MinOffset + 96)), Vector512.Create(Unsafe.ReadUnaligned<int>(bsum + 6)).AsInt16());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> D(byte* t) => HalfTable.ToSingle(Vector256.Load((ushort*)(t + HalfOffset)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> DMin(byte* t) => HalfTable.ToSingle(Vector256.Load((ushort*)(t + HalfOffset + 32)));
}

/// <summary>How a k-quant tile of <see cref="Q4KTiles"/> lays out its codes: Q4_K's nibbles alone, or Q5_K's with a
/// vector of fifth bits ahead of each sub-block (a struct per layout, so the kernels are compiled once for each and the
/// layout's branches fold away).</summary>
internal interface IKTileLayout
{
    /// <summary>Whether each sub-block's code vectors are preceded by 64 bytes of fifth bits.</summary>
    static abstract bool FifthBits { get; }
}

/// <summary>Q4_K tiles.</summary>
internal struct Q4KLayout : IKTileLayout
{
    public static bool FifthBits => false;
}

/// <summary>Q5_K tiles.</summary>
internal struct Q5KLayout : IKTileLayout
{
    public static bool FifthBits => true;
}
