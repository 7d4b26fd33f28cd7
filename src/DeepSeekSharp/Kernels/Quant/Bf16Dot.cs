using System.Runtime.InteropServices;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>float32 activations against bfloat16 weights, widened in registers (no float32 copy of the weights): the
/// engine's BF16 kernel (<see cref="WidenedDot{TC}"/> over <see cref="Bf16Codes"/>, <see cref="Dot"/>'s order), so the
/// summation order is fixed by the length alone, as for <see cref="Dot"/>.</summary>
public static class Bf16Dot
{
    public static float Compute(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x)
    {
        if (w.Length != x.Length) ThrowHelper.LengthMismatch(nameof(x), w.Length, x.Length);
        return WidenedDot<Bf16Codes>.Compute(MemoryMarshal.AsBytes(w), x);
    }

    internal static float Scalar(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x) => WidenedDot<Bf16Codes>.Scalar(MemoryMarshal.AsBytes(w), x);

    internal static float V512(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x) => WidenedDot<Bf16Codes>.V512(MemoryMarshal.AsBytes(w), x);

    internal static float V256(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x) => WidenedDot<Bf16Codes>.V256(MemoryMarshal.AsBytes(w), x);
}
