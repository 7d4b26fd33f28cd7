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
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
            {
                Vector512<float> v = Vector512.LoadUnsafe(ref g, (nuint)i);
                (v / (Vector512<float>.One + FastExp.Exp(-v)) * Vector512.LoadUnsafe(ref u, (nuint)i)).StoreUnsafe(ref o, (nuint)i);
            }
        else if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8)
            {
                Vector256<float> v = Vector256.LoadUnsafe(ref g, (nuint)i);
                (v / (Vector256<float>.One + FastExp.Exp(-v)) * Vector256.LoadUnsafe(ref u, (nuint)i)).StoreUnsafe(ref o, (nuint)i);
            }
        for (; i < n; i++)
        {
            float v = Unsafe.Add(ref g, i);
            Unsafe.Add(ref o, i) = v / (1f + FastExp.Exp(-v)) * Unsafe.Add(ref u, i);
        }
    }
}
