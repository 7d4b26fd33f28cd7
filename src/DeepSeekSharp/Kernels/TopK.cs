namespace DeepSeekSharp.Kernels;

/// <summary>Indices of the k largest values, largest first; ties go to the lower index (as torch.topk on CPU
/// does for distinct values). Negative infinity entries are never chosen before finite ones.</summary>
public static class TopK
{
    /// <summary>The index of the largest value, the lowest index on ties (greedy decoding's choice).</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    public static void Select(ReadOnlySpan<float> values, Span<int> indices)
    {
        int k = indices.Length;
        if (k > values.Length) ThrowHelper.TooShort(nameof(values), k, values.Length);
        int filled = 0;
        for (int i = 0; i < values.Length; i++)
        {
            float v = values[i];
            if (filled == k && !(v > values[indices[k - 1]])) continue;
            int pos = filled < k ? filled++ : k - 1;
            while (pos > 0 && v > values[indices[pos - 1]])
            {
                indices[pos] = indices[pos - 1];
                pos--;
            }
            indices[pos] = i;
        }
    }
}
