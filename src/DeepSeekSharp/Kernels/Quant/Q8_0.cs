using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>GGUF Q8_0: blocks of 32 weights stored as an fp16 scale d and 32 int8 codes (34 bytes); w = d · q.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ8_0
{
    public const int Size = 32, Bytes = 34;
    public ushort D;
    public Codes Qs;

    [InlineArray(32)]
    public struct Codes { private sbyte _e; }
}

public static class Q8_0
{
    /// <summary>Quantises one row (length a multiple of 32) as ggml's quantize_row_q8_0_ref does: d = max|x| / 127,
    /// q = x · (1 / d) rounded to nearest, halves away from zero (its roundf). With 256-bit vectors each block's 32
    /// codes at once: the rounding as truncation plus one where the exact remainder is a half or more — the same
    /// codes as <see cref="MathF.Round(float, MidpointRounding)"/> away from zero.</summary>
    public static void QuantizeRow(ReadOnlySpan<float> x, Span<BlockQ8_0> dst)
    {
        if (x.Length != dst.Length * BlockQ8_0.Size) ThrowHelper.LengthMismatch(nameof(dst), x.Length / BlockQ8_0.Size, dst.Length);
        for (int b = 0; b < dst.Length; b++)
        {
            ReadOnlySpan<float> v = x.Slice(b * 32, 32);
            if (!Vector256.IsHardwareAccelerated)
            {
                float amax = 0;
                foreach (float f in v) amax = MathF.Max(amax, MathF.Abs(f));
                float d = amax / 127f, inv = d > 0 ? 1f / d : 0f;
                dst[b].D = HalfTable.FromFloat(d);
                for (int i = 0; i < 32; i++) dst[b].Qs[i] = (sbyte)MathF.Round(v[i] * inv, MidpointRounding.AwayFromZero);
                continue;
            }
            Vector256<float> v0 = Vector256.Create(v[..8]), v1 = Vector256.Create(v[8..16]), v2 = Vector256.Create(v[16..24]), v3 = Vector256.Create(v[24..]);
            Vector256<float> m = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
            float top = MathF.Max(MathF.Max(MathF.Max(m[0], m[1]), MathF.Max(m[2], m[3])), MathF.Max(MathF.Max(m[4], m[5]), MathF.Max(m[6], m[7])));
            float scale = top / 127f;
            Vector256<float> id = Vector256.Create(scale > 0 ? 1f / scale : 0f);
            dst[b].D = HalfTable.FromFloat(scale);
            Vector256<short> low = Vector256.Narrow(RoundAway(v0 * id), RoundAway(v1 * id)), high = Vector256.Narrow(RoundAway(v2 * id), RoundAway(v3 * id));
            Vector256.Narrow(low, high).StoreUnsafe(ref Unsafe.As<BlockQ8_0.Codes, sbyte>(ref dst[b].Qs));
        }
    }

    /// <summary>roundf in lanes: truncate, then a step away from zero where the remainder (exact) is at least a half.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> RoundAway(Vector256<float> q)
    {
        Vector256<float> t = Vector256.Truncate(q);
        Vector256<float> step = Vector256.GreaterThanOrEqual(Vector256.Abs(q - t), Vector256.Create(0.5f)) & Vector256.CopySign(Vector256<float>.One, q);
        return Vector256.ConvertToInt32(t + step);
    }

    public static void DequantizeRow(ReadOnlySpan<BlockQ8_0> src, Span<float> dst)
    {
        for (int b = 0; b < src.Length; b++)
        {
            float d = HalfTable.Values[src[b].D];
            for (int i = 0; i < 32; i++) dst[b * 32 + i] = d * src[b].Qs[i];
        }
    }

    /// <summary>Σ w·x for one weight row against quantised activations (codes and per-block scales).</summary>
    public static float VecDotQ8_0Q8(ReadOnlySpan<BlockQ8_0> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        if (xq.Length != w.Length * 32 || xd.Length != w.Length) ThrowHelper.LengthMismatch(nameof(xq), w.Length * 32, xq.Length);
        if (!Avx2.IsSupported) return IntDots128.IsSupported ? V128(w, xq, xd) : Scalar(w, xq, xd);
        // The AVX-VNNI kernel takes each block's Σx (QuantizedActivations.BlockSum, which callers of the matrices have).
        Span<short> sums = w.Length <= 256 ? stackalloc short[w.Length] : new short[w.Length];
        for (int b = 0; b < sums.Length; b++) sums[b] = QuantizedActivations.SumOf(xq.Slice(b * 32, 32));
        return V256(w, xq, xd, sums);
    }

    /// <summary>The specification (see <see cref="BlockDots{T}.Scalar"/>).</summary>
    internal static float Scalar(ReadOnlySpan<BlockQ8_0> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd) =>
        BlockDots<Q8_0Codes>.Scalar(MemoryMarshal.AsBytes(w), xq, xd);

    /// <summary>128-bit path (see <see cref="BlockDots{T}.V128"/>).</summary>
    internal static float V128(ReadOnlySpan<BlockQ8_0> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd) =>
        BlockDots<Q8_0Codes>.V128(MemoryMarshal.AsBytes(w), xq, xd);

    /// <summary>AVX2 path (see <see cref="BlockDots{T}.V256"/>).</summary>
    internal static float V256(ReadOnlySpan<BlockQ8_0> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> xsum) =>
        BlockDots<Q8_0Codes>.V256(ref Unsafe.As<BlockQ8_0, byte>(ref MemoryMarshal.GetReference(w)), w.Length, xq, xd, xsum);

    /// <summary>Two tokens against one weight row (see <see cref="BlockDots{T}.V256x2"/>).</summary>
    internal static void V256x2(ReadOnlySpan<BlockQ8_0> w, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> xsum, Span<float> result) =>
        BlockDots<Q8_0Codes>.V256x2(ref Unsafe.As<BlockQ8_0, byte>(ref MemoryMarshal.GetReference(w)), w.Length, xq, xStride, xd, dStride, xsum, result);

    /// <summary>Four tokens against one weight row (see <see cref="BlockDots{T}.V256x4"/>).</summary>
    internal static void V256x4(ReadOnlySpan<BlockQ8_0> w, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> xsum, Span<float> result) =>
        BlockDots<Q8_0Codes>.V256x4(ref Unsafe.As<BlockQ8_0, byte>(ref MemoryMarshal.GetReference(w)), w.Length, xq, xStride, xd, dStride, xsum, result);
}

/// <summary>Q8_0's codes: 32 int8 after the fp16 scale.</summary>
internal readonly struct Q8_0Codes : IBlockCodes
{
    public static int Bytes => BlockQ8_0.Bytes;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Codes(ref byte block) => Vector256.LoadUnsafe(ref Unsafe.As<byte, sbyte>(ref Unsafe.Add(ref block, 2)));

    public static int Code(ReadOnlySpan<byte> block, int i) => (sbyte)block[2 + i];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Codes128(ref byte block, out Vector128<sbyte> low, out Vector128<sbyte> high)
    {
        low = Vector128.LoadUnsafe(ref Unsafe.Add(ref block, 2)).AsSByte();
        high = Vector128.LoadUnsafe(ref Unsafe.Add(ref block, 18)).AsSByte();
    }

    public static int Offset => 0;

    /// <summary>Not used: Q8_0's codes span the signed byte range and take the sign trick, or are biased by 128 with
    /// AVX-VNNI (<c>BlockDots.Bias</c>).</summary>
    public static Vector256<byte> Unsigned(ref byte block) => default;

    /// <summary>Not used (see <see cref="Unsigned"/>).</summary>
    public static void UnsignedPair(ref byte block, out Vector256<byte> low, out Vector256<byte> high) => low = high = default;
}
