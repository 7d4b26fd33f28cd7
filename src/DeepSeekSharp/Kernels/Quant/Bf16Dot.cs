using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>float32 activations against bfloat16 weights, widened in registers (no float32 copy of the weights).
/// Same fixed summation order as <see cref="Dot"/>.</summary>
public static class Bf16Dot
{
    public static float Compute(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x)
    {
        if (w.Length != x.Length) ThrowHelper.LengthMismatch(nameof(x), w.Length, x.Length);
        if (Avx512F.IsSupported) return V512(w, x);
        if (Avx2.IsSupported) return V256(w, x);
        return Scalar(w, x);
    }

    internal static float Scalar(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x)
    {
        float s = 0;
        for (int i = 0; i < w.Length; i++) s += BitConverter.Int32BitsToSingle(w[i] << 16) * x[i];
        return s;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static float V512(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x)
    {
        ref ushort rw = ref MemoryMarshal.GetReference(w);
        ref float rx = ref MemoryMarshal.GetReference(x);
        int n = w.Length, i = 0;
        Vector512<float> s0 = Vector512<float>.Zero, s1 = s0;
        for (; i + 32 <= n; i += 32)
        {
            Vector512<float> w0 = Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.LoadUnsafe(ref rw, (nuint)i)), 16).AsSingle();
            Vector512<float> w1 = Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.LoadUnsafe(ref rw, (nuint)(i + 16))), 16).AsSingle();
            s0 = Vector512.FusedMultiplyAdd(w0, Vector512.LoadUnsafe(ref rx, (nuint)i), s0);
            s1 = Vector512.FusedMultiplyAdd(w1, Vector512.LoadUnsafe(ref rx, (nuint)(i + 16)), s1);
        }
        float sum = Vector512.Sum(s0 + s1);
        for (; i < n; i++) sum += BitConverter.Int32BitsToSingle(w[i] << 16) * x[i];
        return sum;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static float V256(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x)
    {
        ref ushort rw = ref MemoryMarshal.GetReference(w);
        ref float rx = ref MemoryMarshal.GetReference(x);
        int n = w.Length, i = 0;
        Vector256<float> s0 = Vector256<float>.Zero, s1 = s0;
        for (; i + 16 <= n; i += 16)
        {
            Vector256<float> w0 = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref rw, (nuint)i)), 16).AsSingle();
            Vector256<float> w1 = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref rw, (nuint)(i + 8))), 16).AsSingle();
            s0 = Vector256.FusedMultiplyAdd(w0, Vector256.LoadUnsafe(ref rx, (nuint)i), s0);
            s1 = Vector256.FusedMultiplyAdd(w1, Vector256.LoadUnsafe(ref rx, (nuint)(i + 8)), s1);
        }
        float sum = Vector256.Sum(s0 + s1);
        for (; i < n; i++) sum += BitConverter.Int32BitsToSingle(w[i] << 16) * x[i];
        return sum;
    }
}
