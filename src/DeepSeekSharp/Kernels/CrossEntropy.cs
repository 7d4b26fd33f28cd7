namespace DeepSeekSharp.Kernels;

/// <summary>Next-token cross-entropy of one row of logits: loss = log Σ exp(z) − z[target], computed in double so a
/// vocabulary of 129,280 sums without loss.</summary>
public static class CrossEntropy
{
    /// <summary>−log softmax(z)[target].</summary>
    public static double Forward(ReadOnlySpan<float> logits, int target)
    {
        if ((uint)target >= (uint)logits.Length) throw new ArgumentOutOfRangeException(nameof(target), target, $"a token id below {logits.Length}");
        return LogSumExp(logits) - logits[target];
    }

    /// <summary>dlogits += scale · (softmax(z) − onehot(target)): the derivative of <paramref name="scale"/> · <see cref="Forward"/>
    /// (scale = 1 / tokens for a mean over tokens, times λ for a weighted loss).</summary>
    public static void Backward(Span<float> dlogits, ReadOnlySpan<float> logits, int target, float scale)
    {
        if ((uint)target >= (uint)logits.Length) throw new ArgumentOutOfRangeException(nameof(target), target, $"a token id below {logits.Length}");
        if (dlogits.Length != logits.Length) ThrowHelper.LengthMismatch(nameof(dlogits), logits.Length, dlogits.Length);
        double lse = LogSumExp(logits);
        for (int i = 0; i < logits.Length; i++) dlogits[i] += scale * (float)Math.Exp(logits[i] - lse);
        dlogits[target] -= scale;
    }

    /// <summary>The fused form a trainer uses: returns −log softmax(z)[target] and leaves
    /// <paramref name="scale"/> · (softmax(z) − onehot(target)) in <paramref name="logits"/> (exponentials in float32 with
    /// <see cref="Softmax.ExpInPlace"/>, the logarithm in double).</summary>
    public static double ForwardBackwardInPlace(Span<float> logits, int target, float scale)
    {
        if ((uint)target >= (uint)logits.Length) throw new ArgumentOutOfRangeException(nameof(target), target, $"a token id below {logits.Length}");
        float zt = logits[target];
        float sum = Softmax.ExpInPlace(logits, out float max);
        System.Numerics.Tensors.TensorPrimitives.Multiply(logits, scale / sum, logits);
        logits[target] -= scale;
        return Math.Log(sum) + max - zt;
    }

    private static double LogSumExp(ReadOnlySpan<float> z)
    {
        double max = double.NegativeInfinity;
        foreach (float v in z) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in z) sum += Math.Exp(v - max);
        return max + Math.Log(sum);
    }
}
