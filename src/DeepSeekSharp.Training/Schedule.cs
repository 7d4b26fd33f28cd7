namespace DeepSeekSharp.Training;

/// <summary>The learning rate at a step: linear warm-up from 0 to <see cref="PeakLr"/> over <see cref="WarmupSteps"/>,
/// then a cosine decay to <see cref="MinLr"/> at <see cref="TotalSteps"/>, constant after.</summary>
public sealed record LrSchedule(double PeakLr, double MinLr, int WarmupSteps, int TotalSteps)
{
    /// <param name="step">0-based optimizer step</param>
    public double At(int step)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        if (step < WarmupSteps) return PeakLr * (step + 1) / WarmupSteps;
        if (step >= TotalSteps || TotalSteps <= WarmupSteps) return MinLr;
        double progress = (double)(step - WarmupSteps) / (TotalSteps - WarmupSteps);
        return MinLr + 0.5 * (PeakLr - MinLr) * (1 + Math.Cos(Math.PI * progress));
    }
}

/// <summary>Gradient clipping by global norm, as <c>torch.nn.utils.clip_grad_norm_</c>: the L2 norm over every gradient
/// tensor together; when it exceeds <c>maxNorm</c>, every gradient is scaled by maxNorm / (norm + 1e-6).</summary>
public static class GradientClipping
{
    /// <summary>The global L2 norm of <paramref name="grads"/>, summed in double in tensor order.</summary>
    public static double GlobalNorm(IEnumerable<Memory<float>> grads)
    {
        double ss = 0;
        foreach (Memory<float> g in grads)
            foreach (float v in g.Span) ss += (double)v * v;
        return Math.Sqrt(ss);
    }

    /// <summary>Scales <paramref name="grads"/> in place so their global norm is at most <paramref name="maxNorm"/>;
    /// returns the norm before clipping.</summary>
    public static double Clip(IReadOnlyList<Memory<float>> grads, double maxNorm)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxNorm);
        double norm = GlobalNorm(grads);
        if (norm > maxNorm)
        {
            float scale = (float)(maxNorm / (norm + 1e-6));
            foreach (Memory<float> g in grads) System.Numerics.Tensors.TensorPrimitives.Multiply(g.Span, scale, g.Span);
        }
        return norm;
    }
}
