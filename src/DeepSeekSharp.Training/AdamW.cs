namespace DeepSeekSharp.Training;

/// <summary>AdamW as <c>torch.optim.AdamW</c> computes it (decoupled weight decay, bias correction, amsgrad off), one
/// parameter tensor at a time over flat float32 buffers:
/// <code>
/// m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²
/// p ← p (1 − lr · wd)
/// p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
/// </code>
/// DeepSeek-V3 decays 2-D tensors only; norms (1-D) get weight decay 0.</summary>
public sealed record AdamW
{
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.95;
    public double Eps { get; init; } = 1e-8;
    public double WeightDecay { get; init; } = 0.1;

    /// <summary>One step <paramref name="t"/> (1 for the first) of one tensor.</summary>
    /// <param name="p">the parameters, updated in place</param>
    /// <param name="g">their gradients</param>
    /// <param name="m">first moments, updated (zero before the first step)</param>
    /// <param name="v">second moments, updated (zero before the first step)</param>
    /// <param name="decay">whether this tensor is decayed (2-D weights)</param>
    public void Step(Span<float> p, ReadOnlySpan<float> g, Span<float> m, Span<float> v, int t, double lr, bool decay)
    {
        if (g.Length != p.Length || m.Length != p.Length || v.Length != p.Length)
            throw new ArgumentException($"parameters ({p.Length}), gradients ({g.Length}) and moments ({m.Length}, {v.Length}) must have one length");
        ArgumentOutOfRangeException.ThrowIfLessThan(t, 1);
        float b1 = (float)Beta1, b2 = (float)Beta2, c1 = (float)(1 - Beta1), c2 = (float)(1 - Beta2);
        float keep = decay ? (float)(1 - lr * WeightDecay) : 1f;
        float stepSize = (float)(lr / (1 - Math.Pow(Beta1, t)));
        float correction2 = (float)Math.Sqrt(1 - Math.Pow(Beta2, t));
        float eps = (float)Eps;
        for (int i = 0; i < p.Length; i++)
        {
            m[i] = b1 * m[i] + c1 * g[i];
            v[i] = b2 * v[i] + c2 * g[i] * g[i];
            p[i] = p[i] * keep - stepSize * m[i] / (MathF.Sqrt(v[i]) / correction2 + eps);
        }
    }
}
