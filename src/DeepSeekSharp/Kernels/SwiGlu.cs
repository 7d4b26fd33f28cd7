namespace DeepSeekSharp.Kernels;

/// <summary>h = silu(gate) ⊙ up, with silu(g) = g · sigmoid(g).</summary>
public static class SwiGlu
{
    public static void Forward(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> h)
    {
        if (up.Length != gate.Length) ThrowHelper.LengthMismatch(nameof(up), gate.Length, up.Length);
        if (h.Length < gate.Length) ThrowHelper.TooShort(nameof(h), gate.Length, h.Length);
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            h[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }
}
