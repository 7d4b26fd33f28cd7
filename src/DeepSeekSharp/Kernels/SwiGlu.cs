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
        else if (Simd128.IsFast) i = Body<Simd128, Vector128<float>>(ref g, ref u, ref o, n);
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

    /// <summary>The derivative of <see cref="Forward"/>: with σ = 1 / (1 + e^−g), dgate += dh ⊙ up ⊙ σ(1 + g(1 − σ)) and
    /// dup += dh ⊙ g σ. In the forward pass this was: h = g σ(g) ⊙ up.</summary>
    public static void Backward(Span<float> dgate, Span<float> dup, ReadOnlySpan<float> dh, ReadOnlySpan<float> gate, ReadOnlySpan<float> up)
    {
        int n = gate.Length;
        if (up.Length != n) ThrowHelper.LengthMismatch(nameof(up), n, up.Length);
        if (dh.Length != n) ThrowHelper.LengthMismatch(nameof(dh), n, dh.Length);
        if (dgate.Length != n) ThrowHelper.LengthMismatch(nameof(dgate), n, dgate.Length);
        if (dup.Length != n) ThrowHelper.LengthMismatch(nameof(dup), n, dup.Length);
        for (int i = 0; i < n; i++)
        {
            float g = gate[i], s = 1f / (1f + FastExp.Exp(-g));
            dgate[i] += dh[i] * up[i] * s * (1f + g * (1f - s));
            dup[i] += dh[i] * g * s;
        }
    }
}
