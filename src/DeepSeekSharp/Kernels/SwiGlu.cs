using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Kernels;

/// <summary>h = silu(gate) ⊙ up, with silu(g) = g / (1 + e^−g); every element the same operations in vector body and
/// tail alike (see <see cref="FastExp"/>).</summary>
public static class SwiGlu
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Forward(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> h)
    {
        if (up.Length != gate.Length) ThrowHelper.LengthMismatch(nameof(up), gate.Length, up.Length);
        if (h.Length < gate.Length) ThrowHelper.TooShort(nameof(h), gate.Length, h.Length);
        ref float g = ref MemoryMarshal.GetReference(gate), u = ref MemoryMarshal.GetReference(up), o = ref MemoryMarshal.GetReference(h);
        int n = gate.Length, i = 0;
        if (Vector512.IsHardwareAccelerated) i = Body<Simd512, Vector512<float>>(ref g, ref u, ref o, n);
        else if (Vector256.IsHardwareAccelerated) i = Body<Simd256, Vector256<float>>(ref g, ref u, ref o, n);
        for (; i < n; i++)
        {
            float v = Unsafe.Add(ref g, i);
            Unsafe.Add(ref o, i) = v / (1f + FastExp.Exp(-v)) * Unsafe.Add(ref u, i);
        }
    }

    /// <summary>The whole vectors; returns the index of the first element left for the tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Body<TS, TV>(ref float g, ref float u, ref float o, int n) where TS : ISimd<TV> where TV : struct
    {
        int i = 0;
        for (; i + TS.Count <= n; i += TS.Count)
        {
            TV v = TS.Load(ref g, (nuint)i);
            TS.Store(TS.Multiply(TS.Divide(v, TS.Add(TS.One, FastExp.Exp<TS, TV>(TS.Negate(v)))), TS.Load(ref u, (nuint)i)), ref o, (nuint)i);
        }
        return i;
    }
}
