namespace DeepSeekSharp.Kernels;

/// <summary>Rotary embedding on interleaved pairs: (x[2i], x[2i+1]) is rotated by the angle whose cos/sin are
/// cos[i], sin[i] (DeepSeek's <c>view_as_complex</c> layout, not NeoX's half split).</summary>
public static class Rope
{
    /// <param name="x">one or more vectors of length 2·cos.Length, rotated in place</param>
    public static void ApplyInterleaved(Span<float> x, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin) => Rotate(x, cos, sin, inverse: false);

    /// <summary>The derivative of <see cref="ApplyInterleaved"/>, in place: each pair's gradient rotated back by the
    /// same angle, (da, db) ← (da·cos + db·sin, −da·sin + db·cos). In the forward pass this was:
    /// (a, b) ← (a·cos − b·sin, a·sin + b·cos).</summary>
    /// <param name="dx">gradients of the rotated vectors, replaced by those of the inputs</param>
    public static void ApplyInterleavedBackward(Span<float> dx, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin) => Rotate(dx, cos, sin, inverse: true);

    /// <summary>(a, b) ← (a·cos − b·s, a·s + b·cos) with s = ±sin (a negated sine is exact, so the forward bits do not
    /// depend on sharing this loop).</summary>
    private static void Rotate(Span<float> x, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool inverse)
    {
        int d = cos.Length * 2;
        if (sin.Length != cos.Length) ThrowHelper.LengthMismatch(nameof(sin), cos.Length, sin.Length);
        if (d == 0 || x.Length % d != 0) ThrowHelper.LengthMismatch(nameof(x), d, x.Length);
        for (int off = 0; off < x.Length; off += d)
        {
            for (int i = 0; i < cos.Length; i++)
            {
                float a = x[off + 2 * i], b = x[off + 2 * i + 1], s = inverse ? -sin[i] : sin[i];
                x[off + 2 * i] = a * cos[i] - b * s;
                x[off + 2 * i + 1] = a * s + b * cos[i];
            }
        }
    }
}
