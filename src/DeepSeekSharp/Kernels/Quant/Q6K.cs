using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>GGUF Q6_K: super-blocks of 256 weights (210 bytes): 128 bytes of low nibbles, 64 bytes of high 2-bit
/// pairs, sixteen int8 scales (one per 16 weights), fp16 d. In each half of 128 weights, low-nibble byte l holds
/// weights l and 64 + l, byte 32 + l holds 32 + l and 96 + l; high byte l holds the top two bits of weights l,
/// 32 + l, 64 + l, 96 + l (bits 0-1, 2-3, 4-5, 6-7). w = d · sc_j · (q − 32).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ6K
{
    public const int Size = 256, Bytes = 210;
    public Low Ql;
    public High Qh;
    public Scales Sc;
    public ushort D;

    [InlineArray(128)]
    public struct Low { private byte _e; }

    [InlineArray(64)]
    public struct High { private byte _e; }

    [InlineArray(16)]
    public struct Scales { private sbyte _e; }
}

public static class Q6K
{
    /// <summary>Code (0..63) of weight i of a block.</summary>
    private static int Code(ref BlockQ6K b, int i)
    {
        int half = i / 128, k = i % 128 / 32, l = i % 32;
        int low = b.Ql[half * 64 + (k % 2) * 32 + l];
        low = k < 2 ? low & 0xF : low >> 4;
        return low | (((b.Qh[half * 32 + l] >> (2 * k)) & 3) << 4);
    }

    public static void DequantizeRow(ReadOnlySpan<BlockQ6K> src, Span<float> dst)
    {
        for (int b = 0; b < src.Length; b++)
        {
            BlockQ6K blk = src[b];
            float d = HalfTable.Values[blk.D];
            for (int i = 0; i < 256; i++) dst[b * 256 + i] = d * blk.Sc[i / 16] * (Code(ref blk, i) - 32);
        }
    }

    /// <summary>Quantises one row (length a multiple of 256) as ggml's quantize_row_q6_K_ref does: per 16 weights the
    /// scale of <see cref="FitScale"/>; the sixteen scales quantised to int8 against d = max|scale| / 128 (the one of
    /// largest magnitude on −128); then each sub-block's codes recomputed with its stored scale (kept from the fit where
    /// that scale rounds to zero).</summary>
    public static void QuantizeRow(ReadOnlySpan<float> x, Span<BlockQ6K> dst)
    {
        if (x.Length != dst.Length * 256) ThrowHelper.LengthMismatch(nameof(dst), x.Length / 256, dst.Length);
        Span<float> scales = stackalloc float[16];
        Span<byte> codes = stackalloc byte[256];
        for (int b = 0; b < dst.Length; b++)
        {
            ReadOnlySpan<float> v = x.Slice(b * 256, 256);
            float maxScale = 0, maxAbsScale = 0;
            for (int j = 0; j < 16; j++)
            {
                scales[j] = FitScale(v.Slice(j * 16, 16), codes.Slice(j * 16, 16));
                if (MathF.Abs(scales[j]) > maxAbsScale) (maxAbsScale, maxScale) = (MathF.Abs(scales[j]), scales[j]);
            }
            ref BlockQ6K blk = ref dst[b];
            blk = default;
            if (maxAbsScale < GroupMaxEps) continue; // all zero: d = 0, every code 0
            float iscale = -128f / maxScale;
            blk.D = HalfTable.FromFloat(1 / iscale);
            for (int j = 0; j < 16; j++) blk.Sc[j] = (sbyte)Math.Min(127, KQuants.NearestInt(iscale * scales[j]));
            for (int j = 0; j < 16; j++)
            {
                float d = HalfTable.Values[blk.D] * blk.Sc[j];
                if (d == 0) continue;
                for (int i = 0; i < 16; i++) codes[16 * j + i] = Code(v[16 * j + i] / d);
            }
            for (int i = 0; i < 256; i++)
            {
                int q = codes[i], half = i / 128, k = i % 128 / 32, l = i % 32;
                blk.Ql[half * 64 + (k % 2) * 32 + l] |= (byte)((q & 0xF) << (k < 2 ? 0 : 4));
                blk.Qh[half * 32 + l] |= (byte)((q >> 4) << (2 * k));
            }
        }
    }

    /// <summary>ggml's GROUP_MAX_EPS: sub-blocks whose largest magnitude is below it are all zero.</summary>
    private const float GroupMaxEps = 1e-15f;

    /// <summary>The code (0..63) of a weight divided by its scale: nearest, clamped to −32..31, plus 32.</summary>
    private static byte Code(float scaled) => (byte)(Math.Clamp(KQuants.NearestInt(scaled), -32, 31) + 32);

    /// <summary>The scale of sixteen weights and their codes (0..63, code − 32 times the scale) as ggml's
    /// make_qx_quants(16, 32, x, L, rmse_type 1) chooses them: the scale putting the value of largest magnitude on −32,
    /// then nineteen scales around it (−(32 + 0.1·k) / max, k = −9..9), each with its codes rounded and the
    /// x²-weighted least-squares scale Σw·x·l / Σw·l² — the first that fits better than all before it is kept.</summary>
    private static float FitScale(ReadOnlySpan<float> x, Span<byte> codes)
    {
        float max = 0, amax = 0;
        foreach (float f in x)
            if (MathF.Abs(f) > amax) (amax, max) = (MathF.Abs(f), f);
        if (amax < GroupMaxEps)
        {
            codes.Clear();
            return 0;
        }
        float iscale = -32 / max;
        SetCodes(x, iscale, codes);
        (float sumlx, float suml2) = Sums(x, iscale);
        float scale = suml2 != 0 ? sumlx / suml2 : 0, best = scale * sumlx;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            iscale = -(32 + 0.1f * step) / max;
            (sumlx, suml2) = Sums(x, iscale);
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                SetCodes(x, iscale, codes);
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    private static void SetCodes(ReadOnlySpan<float> x, float iscale, Span<byte> codes)
    {
        for (int i = 0; i < x.Length; i++) codes[i] = Code(iscale * x[i]);
    }

    /// <summary>Σ w·x·l and Σ w·l² over the weights with w = x² and l = code − 32 at <paramref name="iscale"/>, added in
    /// ggml's order.</summary>
    private static (float SumLx, float SumL2) Sums(ReadOnlySpan<float> x, float iscale)
    {
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < x.Length; i++)
        {
            int l = Code(iscale * x[i]) - 32;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        return (sumlx, suml2);
    }

    /// <summary>Σ w·x against activations quantised per 256 (codes and one scale per super-block).</summary>
    public static float VecDotQ6KQ8K(ReadOnlySpan<BlockQ6K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        if (xq.Length != w.Length * 256 || xd.Length != w.Length) ThrowHelper.LengthMismatch(nameof(xq), w.Length * 256, xq.Length);
        if (Avx2.IsSupported) return V256(w, xq, xd);
        return IntDots128.IsSupported ? V128(w, xq, xd) : Scalar(w, xq, xd);
    }

    /// <summary>128-bit vectors (ARM64, or x86 without AVX2): sixteen codes (one sub-block) at a time rebuilt from their
    /// low and high bits, Σ (q − 32)·x with <see cref="IntDots128"/> weighted by the sub-block's scale in the lanes,
    /// the exact total times d·dx as in <see cref="Scalar"/> — the specification's bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V128(ReadOnlySpan<BlockQ6K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        ref sbyte xr = ref MemoryMarshal.GetReference(xq);
        Vector128<byte> nibble = Vector128.Create((byte)0x0F), three = Vector128.Create((byte)3);
        Vector128<sbyte> bias = Vector128.Create((sbyte)32);
        float sum = 0;
        for (int b = 0; b < w.Length; b++)
        {
            ref BlockQ6K blk = ref Unsafe.AsRef(in w[b]);
            ref byte ql = ref Unsafe.As<BlockQ6K.Low, byte>(ref blk.Ql);
            ref byte qh = ref Unsafe.As<BlockQ6K.High, byte>(ref blk.Qh);
            ref sbyte sc = ref Unsafe.As<BlockQ6K.Scales, sbyte>(ref blk.Sc);
            ref sbyte xb = ref Unsafe.Add(ref xr, b * 256);
            Vector128<int> acc = Vector128<int>.Zero;
            // Weight i = 128·half + 32·k + l (sub-block i / 16): low bits from ql[64·half + 32·(k mod 2) + l] (low nibble
            // for k < 2, high for k ≥ 2), high bits 2k, 2k + 1 of qh[32·half + l].
            for (int half = 0; half < 2; half++)
                for (int part = 0; part < 2; part++)
                {
                    Vector128<byte> l0 = Vector128.LoadUnsafe(ref ql, (nuint)(64 * half + 16 * part));
                    Vector128<byte> l1 = Vector128.LoadUnsafe(ref ql, (nuint)(64 * half + 32 + 16 * part));
                    Vector128<byte> h = Vector128.LoadUnsafe(ref qh, (nuint)(32 * half + 16 * part));
                    for (int k = 0; k < 4; k++)
                    {
                        Vector128<byte> low = k switch { 0 => l0 & nibble, 1 => l1 & nibble, 2 => Vector128.ShiftRightLogical(l0, 4), _ => Vector128.ShiftRightLogical(l1, 4) };
                        Vector128<sbyte> code = (low | Vector128.ShiftLeft(Vector128.ShiftRightLogical(h, 2 * k) & three, 4)).AsSByte() - bias;
                        int i = 128 * half + 32 * k + 16 * part;
                        acc += IntDots128.Add(Vector128<int>.Zero, code, Vector128.LoadUnsafe(ref xb, (nuint)i)) * (int)Unsafe.Add(ref sc, i / 16);
                    }
                }
            sum += HalfTable.Values[blk.D] * xd[b] * Vector128.Sum(acc);
        }
        return sum;
    }

    /// <summary>The specification: per super-block the exact integer Σ_j sc_j·Σ (q − 32)·x, times d·dx.</summary>
    internal static float Scalar(ReadOnlySpan<BlockQ6K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        float sum = 0;
        for (int b = 0; b < w.Length; b++)
        {
            BlockQ6K blk = w[b];
            int isum = 0;
            for (int j = 0; j < 16; j++)
            {
                int dot = 0;
                for (int i = j * 16; i < j * 16 + 16; i++) dot += (Code(ref blk, i) - 32) * xq[b * 256 + i];
                isum += blk.Sc[j] * dot;
            }
            sum += HalfTable.Values[blk.D] * xd[b] * isum;
        }
        return sum;
    }

    /// <summary>AVX2 without the activations' sums per 16 at hand (computes them, then <see cref="V256(ReadOnlySpan{BlockQ6K}, ReadOnlySpan{sbyte}, ReadOnlySpan{float}, ReadOnlySpan{short})"/>).</summary>
    internal static float V256(ReadOnlySpan<BlockQ6K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        Span<short> sums = xq.Length <= 65536 ? stackalloc short[xq.Length / 16] : new short[xq.Length / 16];
        QuantizedActivations.Sums16Of(xq, sums);
        return V256(w, xq, xd, sums);
    }

    /// <summary>AVX2: codes (stored as q + 32, 0..63) unpacked 32 at a time, u6 × s8 pair sums (maddubs), the two
    /// sub-block scales of the 32 applied by the widening pair-add (scales widened once per block, picked by a byte
    /// shuffle); then 32 · Σ_j sc_j · Σx_j taken off once per block, from the activations' sums per 16
    /// (<see cref="QuantizedActivations.Sums16"/>). All integer: equal to <see cref="Scalar"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V256(ReadOnlySpan<BlockQ6K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> sums16)
    {
        int n = w.Length;
        if (xq.Length < n * 256 || xd.Length < n) ThrowHelper.LengthMismatch(nameof(xq), n * 256, xq.Length);
        if (sums16.Length < n * 16) ThrowHelper.TooShort(nameof(sums16), n * 16, sums16.Length);
        // Refs moved a block at a time, so the offsets inside a block are constants of their instructions; the masks
        // and the scale shuffles made once, outside the loop.
        ref byte blk = ref Unsafe.As<BlockQ6K, byte>(ref MemoryMarshal.GetReference(w));
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        ref short xs = ref MemoryMarshal.GetReference(sums16);
        ref float dx = ref MemoryMarshal.GetReference(xd);
        ref float half = ref MemoryMarshal.GetArrayDataReference(HalfTable.Values);
        var k = new Constants(Vector256.Create((byte)0x0F), Vector256.Create((byte)0x30), Pick(0), Pick(1), Pick(2), Pick(3));
        float sum = 0;
        int b = 0;
        // Two blocks a step share the horizontal sum; their products join the float sum one after the other, as in
        // the specification.
        for (; b + 2 <= n; b += 2)
        {
            Vector128<int> q = Totals2(BlockSums(ref blk, ref x, ref xs, k),
                BlockSums(ref Unsafe.Add(ref blk, BlockQ6K.Bytes), ref Unsafe.Add(ref x, 256), ref Unsafe.Add(ref xs, 16), k)); // [Σ first, Σ second, …]
            sum += Scale(ref half, ref blk) * dx * q.ToScalar();
            sum += Scale(ref half, ref Unsafe.Add(ref blk, BlockQ6K.Bytes)) * Unsafe.Add(ref dx, 1) * q.GetElement(1);
            blk = ref Unsafe.Add(ref blk, 2 * BlockQ6K.Bytes);
            x = ref Unsafe.Add(ref x, 512);
            xs = ref Unsafe.Add(ref xs, 32);
            dx = ref Unsafe.Add(ref dx, 2);
        }
        if (b < n) sum += Scale(ref half, ref blk) * dx * Vector256.Sum(BlockSums(ref blk, ref x, ref xs, k));
        return sum;
    }

    /// <summary>Two tokens against one row (a decode step with a speculative draft, two sequences of a batch): each
    /// half block's codes and scale shuffles made once for both; token t's activations start at t ·
    /// <paramref name="xStride"/> (codes), t · <paramref name="dStride"/> (scales) and t · <paramref name="sStride"/>
    /// (sums per 16). Each token gets the integers and float steps of <see cref="V256(ReadOnlySpan{BlockQ6K},
    /// ReadOnlySpan{sbyte}, ReadOnlySpan{float}, ReadOnlySpan{short})"/> alone, so the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void V256x2(ReadOnlySpan<BlockQ6K> w, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> sums16, int sStride, Span<float> result)
    {
        int n = w.Length;
        if (xStride < n * 256 || xq.Length < xStride + n * 256) ThrowHelper.LengthMismatch(nameof(xq), xStride + n * 256, xq.Length);
        if (dStride < n || xd.Length < dStride + n) ThrowHelper.LengthMismatch(nameof(xd), dStride + n, xd.Length);
        if (sStride < n * 16 || sums16.Length < sStride + n * 16) ThrowHelper.TooShort(nameof(sums16), sStride + n * 16, sums16.Length);
        if (result.Length < 2) ThrowHelper.TooShort(nameof(result), 2, result.Length);
        ref byte blk = ref Unsafe.As<BlockQ6K, byte>(ref MemoryMarshal.GetReference(w));
        ref sbyte x0 = ref MemoryMarshal.GetReference(xq);
        ref sbyte x1 = ref Unsafe.Add(ref x0, xStride);
        ref short xs0 = ref MemoryMarshal.GetReference(sums16);
        ref short xs1 = ref Unsafe.Add(ref xs0, sStride);
        ref float dx0 = ref MemoryMarshal.GetReference(xd);
        ref float dx1 = ref Unsafe.Add(ref dx0, dStride);
        ref float half = ref MemoryMarshal.GetArrayDataReference(HalfTable.Values);
        var k = new Constants(Vector256.Create((byte)0x0F), Vector256.Create((byte)0x30), Pick(0), Pick(1), Pick(2), Pick(3));
        float sum0 = 0, sum1 = 0;
        for (int b = 0; b < n; b++)
        {
            Vector256<short> sc16 = Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref Unsafe.As<byte, sbyte>(ref Unsafe.Add(ref blk, 192))));
            Vector256<byte> scales = Avx2.Permute2x128(sc16, sc16, 0x00).AsByte(), scalesHi = Avx2.Permute2x128(sc16, sc16, 0x11).AsByte();
            Half2(ref blk, ref x0, ref x1, 0, scales, k, out Vector256<int> a0, out Vector256<int> a1);
            Half2(ref blk, ref x0, ref x1, 1, scalesHi, k, out Vector256<int> b0, out Vector256<int> b1);
            Vector256<int> t0 = a0 + b0 - Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(sc16, Vector256.LoadUnsafe(ref xs0)), 5);
            Vector256<int> t1 = a1 + b1 - Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(sc16, Vector256.LoadUnsafe(ref xs1)), 5);
            Vector128<int> q = Totals2(t0, t1); // [Σ token 0, Σ token 1, …]
            float d = Scale(ref half, ref blk);
            sum0 += d * dx0 * q.ToScalar();
            sum1 += d * dx1 * q.GetElement(1);
            blk = ref Unsafe.Add(ref blk, BlockQ6K.Bytes);
            x0 = ref Unsafe.Add(ref x0, 256);
            x1 = ref Unsafe.Add(ref x1, 256);
            xs0 = ref Unsafe.Add(ref xs0, 16);
            xs1 = ref Unsafe.Add(ref xs1, 16);
            dx0 = ref Unsafe.Add(ref dx0, 1);
            dx1 = ref Unsafe.Add(ref dx1, 1);
        }
        result[0] = sum0;
        result[1] = sum1;
    }

    /// <summary>Four tokens against one row (a verify pass with three drafts, four sequences of a batch): as
    /// <see cref="V256x2"/>, each half block's codes unpacked and scales picked once for all four; the same bits as
    /// one token at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void V256x4(ReadOnlySpan<BlockQ6K> w, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> sums16, int sStride, Span<float> result)
    {
        int n = w.Length;
        if (xStride < n * 256 || xq.Length < 3 * xStride + n * 256) ThrowHelper.LengthMismatch(nameof(xq), 3 * xStride + n * 256, xq.Length);
        if (dStride < n || xd.Length < 3 * dStride + n) ThrowHelper.LengthMismatch(nameof(xd), 3 * dStride + n, xd.Length);
        if (sStride < n * 16 || sums16.Length < 3 * sStride + n * 16) ThrowHelper.TooShort(nameof(sums16), 3 * sStride + n * 16, sums16.Length);
        if (result.Length < 4) ThrowHelper.TooShort(nameof(result), 4, result.Length);
        ref byte blk = ref Unsafe.As<BlockQ6K, byte>(ref MemoryMarshal.GetReference(w));
        ref sbyte x0 = ref MemoryMarshal.GetReference(xq);
        ref short xs0 = ref MemoryMarshal.GetReference(sums16);
        ref float dx0 = ref MemoryMarshal.GetReference(xd);
        ref float half = ref MemoryMarshal.GetArrayDataReference(HalfTable.Values);
        var k = new Constants(Vector256.Create((byte)0x0F), Vector256.Create((byte)0x30), Pick(0), Pick(1), Pick(2), Pick(3));
        float sum0 = 0, sum1 = 0, sum2 = 0, sum3 = 0;
        for (int b = 0; b < n; b++)
        {
            Vector256<short> sc16 = Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref Unsafe.As<byte, sbyte>(ref Unsafe.Add(ref blk, 192))));
            Vector256<byte> scales = Avx2.Permute2x128(sc16, sc16, 0x00).AsByte(), scalesHi = Avx2.Permute2x128(sc16, sc16, 0x11).AsByte();
            ref sbyte xb = ref Unsafe.Add(ref x0, b * 256);
            ref short sb = ref Unsafe.Add(ref xs0, b * 16);
            ref sbyte xb1 = ref Unsafe.Add(ref xb, xStride), xb2 = ref Unsafe.Add(ref xb, 2 * xStride), xb3 = ref Unsafe.Add(ref xb, 3 * xStride);
            // Each token's sum starts from −32 · Σ_j sc_j · Σx_j; the halves' products are added to it in registers
            // (helpers with out parameters made the JIT pass every vector through the stack).
            Vector256<int> t0 = -Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(sc16, Vector256.LoadUnsafe(ref sb)), 5);
            Vector256<int> t1 = -Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(sc16, Vector256.LoadUnsafe(ref Unsafe.Add(ref sb, sStride))), 5);
            Vector256<int> t2 = -Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(sc16, Vector256.LoadUnsafe(ref Unsafe.Add(ref sb, 2 * sStride))), 5);
            Vector256<int> t3 = -Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(sc16, Vector256.LoadUnsafe(ref Unsafe.Add(ref sb, 3 * sStride))), 5);
            Codes c = Unpack(ref blk, 0, k);
            Vector256<short> s0 = Avx2.Shuffle(scales, k.Pick0).AsInt16(), s1 = Avx2.Shuffle(scales, k.Pick1).AsInt16();
            Vector256<short> s2 = Avx2.Shuffle(scales, k.Pick2).AsInt16(), s3 = Avx2.Shuffle(scales, k.Pick3).AsInt16();
            Vector256<int> a0 = Quarter(c, s0, s1, s2, s3, ref xb, 0), a1 = Quarter(c, s0, s1, s2, s3, ref xb1, 0);
            Vector256<int> a2 = Quarter(c, s0, s1, s2, s3, ref xb2, 0), a3 = Quarter(c, s0, s1, s2, s3, ref xb3, 0);
            c = Unpack(ref blk, 1, k);
            s0 = Avx2.Shuffle(scalesHi, k.Pick0).AsInt16(); s1 = Avx2.Shuffle(scalesHi, k.Pick1).AsInt16();
            s2 = Avx2.Shuffle(scalesHi, k.Pick2).AsInt16(); s3 = Avx2.Shuffle(scalesHi, k.Pick3).AsInt16();
            t0 += a0 + Quarter(c, s0, s1, s2, s3, ref xb, 1);
            t1 += a1 + Quarter(c, s0, s1, s2, s3, ref xb1, 1);
            t2 += a2 + Quarter(c, s0, s1, s2, s3, ref xb2, 1);
            t3 += a3 + Quarter(c, s0, s1, s2, s3, ref xb3, 1);
            Vector256<int> f = IntDots.Fold4(IntDots.Fold2(t0, t1), IntDots.Fold2(t2, t3));
            Vector128<int> q = f.GetLower() + f.GetUpper(); // [Σ token 0, Σ token 1, Σ token 2, Σ token 3]
            float d = Scale(ref half, ref blk);
            ref float db = ref Unsafe.Add(ref dx0, b);
            sum0 += d * db * q.ToScalar();
            sum1 += d * Unsafe.Add(ref db, dStride) * q.GetElement(1);
            sum2 += d * Unsafe.Add(ref db, 2 * dStride) * q.GetElement(2);
            sum3 += d * Unsafe.Add(ref db, 3 * dStride) * q.GetElement(3);
            blk = ref Unsafe.Add(ref blk, BlockQ6K.Bytes);
        }
        result[0] = sum0;
        result[1] = sum1;
        result[2] = sum2;
        result[3] = sum3;
    }

    /// <summary>[Σ lanes of a, Σ lanes of b, …] in the low two lanes: a fold and two adds instead of two
    /// <c>vphaddd</c> (see <see cref="IntDots.Fold2"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Totals2(Vector256<int> a, Vector256<int> b)
    {
        Vector256<int> f = IntDots.Fold2(a, b);
        Vector128<int> q = f.GetLower() + f.GetUpper(); // [a0, b0, a1, b1]: Σa = a0 + a1
        return q + Sse2.UnpackHigh(q.AsInt64(), q.AsInt64()).AsInt32();
    }

    /// <summary>One token's Σ sc·q·x over a half block's four chunks (codes <paramref name="c"/>, scales picked per
    /// chunk): two accumulation chains (chunks 0, 1 and 2, 3), so the parts' multiply-adds need not wait on one
    /// another.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Quarter(in Codes c, Vector256<short> s0, Vector256<short> s1, Vector256<short> s2, Vector256<short> s3,
        ref sbyte x, int half) =>
        Part(Part(Vector256<int>.Zero, c.Q0, ref x, half * 4 + 0, s0), c.Q1, ref x, half * 4 + 1, s1)
        + Part(Part(Vector256<int>.Zero, c.Q2, ref x, half * 4 + 2, s2), c.Q3, ref x, half * 4 + 3, s3);

    /// <summary><see cref="Half"/> for two tokens: the codes unpacked and the scales picked once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Half2(ref byte blk, ref sbyte x0, ref sbyte x1, int half, Vector256<byte> s, in Constants k,
        out Vector256<int> r0, out Vector256<int> r1)
    {
        Codes c = Unpack(ref blk, half, k);
        Vector256<short> s0 = Avx2.Shuffle(s, k.Pick0).AsInt16(), s1 = Avx2.Shuffle(s, k.Pick1).AsInt16();
        Vector256<short> s2 = Avx2.Shuffle(s, k.Pick2).AsInt16(), s3 = Avx2.Shuffle(s, k.Pick3).AsInt16();
        r0 = Quarter(c, s0, s1, s2, s3, ref x0, half);
        r1 = Quarter(c, s0, s1, s2, s3, ref x1, half);
    }

    /// <summary>d of the block at <paramref name="blk"/>, from the fp16 table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Scale(ref float half, ref byte blk) => Unsafe.Add(ref half, Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref blk, 208)));

    /// <summary>Eight lanes whose sum is the block's exact Σ_j sc_j · Σ (q − 32)·x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> BlockSums(ref byte blk, ref sbyte x, ref short xs, in Constants k)
    {
        Vector256<short> sc16 = Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref Unsafe.As<byte, sbyte>(ref Unsafe.Add(ref blk, 192))));
        Vector256<byte> scales = Avx2.Permute2x128(sc16, sc16, 0x00).AsByte(), scalesHi = Avx2.Permute2x128(sc16, sc16, 0x11).AsByte();
        Vector256<int> acc = Half(ref blk, ref x, 0, scales, k) + Half(ref blk, ref x, 1, scalesHi, k);
        return acc - Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(sc16, Vector256.LoadUnsafe(ref xs)), 5); // 32 · Σ_j sc_j · Σx_j
    }

    /// <summary>The masks and scale shuffles of the loop, made once.</summary>
    private readonly struct Constants(Vector256<byte> low4, Vector256<byte> high2, Vector256<byte> pick0, Vector256<byte> pick1,
        Vector256<byte> pick2, Vector256<byte> pick3)
    {
        public readonly Vector256<byte> Low4 = low4, High2 = high2, Pick0 = pick0, Pick1 = pick1, Pick2 = pick2, Pick3 = pick3;
    }

    /// <summary>Half <paramref name="half"/> of the block at <paramref name="blk"/> (128 weights, chunks 4·half ..
    /// 4·half + 3): its codes unpacked and summed against the activations, Σ sc·q·x without the offset;
    /// <paramref name="s"/> holds sub-block scales 8·half .. 8·half + 7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Half(ref byte blk, ref sbyte xb, int half, Vector256<byte> s, in Constants k)
    {
        Codes c = Unpack(ref blk, half, k);
        Vector256<byte> q0 = c.Q0, q1 = c.Q1, q2 = c.Q2, q3 = c.Q3;
        // Two accumulation chains (q0, q1 and q2, q3), so the parts' multiply-adds need not wait on one another.
        Vector256<int> a = Part(Vector256<int>.Zero, q0, ref xb, half * 4 + 0, Avx2.Shuffle(s, k.Pick0).AsInt16());
        a = Part(a, q1, ref xb, half * 4 + 1, Avx2.Shuffle(s, k.Pick1).AsInt16());
        Vector256<int> b = Part(Vector256<int>.Zero, q2, ref xb, half * 4 + 2, Avx2.Shuffle(s, k.Pick2).AsInt16());
        return a + Part(b, q3, ref xb, half * 4 + 3, Avx2.Shuffle(s, k.Pick3).AsInt16());
    }

    /// <summary>The codes (q + 32) of chunks 4·half .. 4·half + 3 of the block at <paramref name="blk"/>, 32 to a vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Codes Unpack(ref byte blk, int half, in Constants k)
    {
        Vector256<byte> l0 = Vector256.LoadUnsafe(ref blk, (nuint)(half * 64)), l1 = Vector256.LoadUnsafe(ref blk, (nuint)(half * 64 + 32));
        Vector256<byte> h = Vector256.LoadUnsafe(ref blk, (nuint)(128 + half * 32));
        Vector256<ushort> h16 = h.AsUInt16();
        return new Codes(
            (l0 & k.Low4) | (Vector256.ShiftLeft(h16, 4).AsByte() & k.High2),
            (l1 & k.Low4) | (Vector256.ShiftLeft(h16, 2).AsByte() & k.High2),
            (Vector256.ShiftRightLogical(l0.AsUInt16(), 4).AsByte() & k.Low4) | (h & k.High2),
            (Vector256.ShiftRightLogical(l1.AsUInt16(), 4).AsByte() & k.Low4) | (Vector256.ShiftRightLogical(h16, 2).AsByte() & k.High2));
    }

    /// <summary>Four vectors of codes (a struct of four fields, which the JIT keeps in registers).</summary>
    private readonly struct Codes(Vector256<byte> q0, Vector256<byte> q1, Vector256<byte> q2, Vector256<byte> q3)
    {
        public readonly Vector256<byte> Q0 = q0, Q1 = q1, Q2 = q2, Q3 = q3;
    }

    /// <summary><paramref name="acc"/> plus Σ over the 32 weights of chunk k (two sub-blocks) of sc·q·x (q the stored
    /// 0..63: u6 × s8 pair sums stay below 2 · 63 · 127 = 16,002, so vpmaddubsw never saturates), as eight int32
    /// partial sums; <paramref name="scales"/> holds sub-block 2k's scale in the low 128 bits and 2k + 1's in the high.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Part(Vector256<int> acc, Vector256<byte> q, ref sbyte xb, int k, Vector256<short> scales) =>
        IntDots.AddPairs(acc, Avx2.MultiplyAddAdjacent(q, Vector256.LoadUnsafe(ref xb, (nuint)(k * 32))), scales);

    /// <summary>Byte shuffles broadcasting, within the scales of one half (eight int16 in each 128-bit lane), scale
    /// 2k to the low lane and 2k + 1 to the high lane: bytes 4k, 4k + 1 repeated in the low half and 4k + 2, 4k + 3 in
    /// the high half. A constant for constant k (see the note on vector constants in BlockDots).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Pick(int k) => Vector256.Create(
        Vector128.Create((ushort)(4 * k | (4 * k + 1) << 8)), Vector128.Create((ushort)(4 * k + 2 | (4 * k + 3) << 8))).AsByte();
}
