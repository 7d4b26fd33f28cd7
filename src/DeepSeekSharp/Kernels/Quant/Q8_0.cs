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
    /// <summary>Quantises one row (length a multiple of 32): d = max|x| / 127, q = round(x / d).</summary>
    public static void QuantizeRow(ReadOnlySpan<float> x, Span<BlockQ8_0> dst)
    {
        if (x.Length != dst.Length * BlockQ8_0.Size) ThrowHelper.LengthMismatch(nameof(dst), x.Length / BlockQ8_0.Size, dst.Length);
        for (int b = 0; b < dst.Length; b++)
        {
            ReadOnlySpan<float> v = x.Slice(b * 32, 32);
            float amax = 0;
            foreach (float f in v) amax = MathF.Max(amax, MathF.Abs(f));
            float d = amax / 127f, inv = d > 0 ? 1f / d : 0f;
            dst[b].D = HalfTable.FromFloat(d);
            for (int i = 0; i < 32; i++) dst[b].Qs[i] = (sbyte)MathF.Round(v[i] * inv, MidpointRounding.ToEven);
        }
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
        if (AvxVnni.IsSupported) return V256(w, xq, xd, vnni: true);
        if (Avx2.IsSupported) return V256(w, xq, xd, vnni: false);
        return Scalar(w, xq, xd);
    }

    /// <summary>The specification: an exact integer sum per block, scaled and summed in block order.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static float Scalar(ReadOnlySpan<BlockQ8_0> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        float sum = 0;
        for (int b = 0; b < w.Length; b++)
        {
            int isum = 0;
            for (int i = 0; i < 32; i++) isum += w[b].Qs[i] * xq[b * 32 + i];
            sum += HalfTable.Values[w[b].D] * xd[b] * isum;
        }
        return sum;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static float V256(ReadOnlySpan<BlockQ8_0> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, bool vnni)
    {
        ref byte wb = ref Unsafe.As<BlockQ8_0, byte>(ref MemoryMarshal.GetReference(w));
        ref sbyte xb = ref MemoryMarshal.GetReference(xq);
        float[] half = HalfTable.Values;
        Vector256<float> acc = Vector256<float>.Zero;
        Vector256<short> ones = Vector256.Create((short)1);
        for (int b = 0; b < w.Length; b++)
        {
            ref byte block = ref Unsafe.Add(ref wb, b * BlockQ8_0.Bytes);
            Vector256<sbyte> wq = Vector256.LoadUnsafe(ref Unsafe.As<byte, sbyte>(ref Unsafe.Add(ref block, 2)));
            Vector256<sbyte> x = Vector256.LoadUnsafe(ref xb, (nuint)(b * 32));
            // |w| as unsigned times x with w's sign moved onto it: u8 × s8 products, exact.
            Vector256<byte> aw = Avx2.Abs(wq);
            Vector256<sbyte> sx = Avx2.Sign(x, wq);
            Vector256<int> dot = vnni
                ? AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, aw, sx)
                : Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(aw, sx), ones);
            float scale = half[Unsafe.As<byte, ushort>(ref block)] * xd[b];
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(dot), Vector256.Create(scale), acc);
        }
        return Vector256.Sum(acc);
    }
}
