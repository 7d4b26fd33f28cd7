using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Inference.Sampling;

/// <summary>Filters applied in order to a preallocated candidate list, then a greedy pick or a seeded draw.
/// Allocates nothing per token.</summary>
public sealed class SamplerChain
{
    private readonly List<ISampler> _steps = [];
    private readonly Candidates _candidates;
    private readonly Rng _rng;
    private readonly bool _greedy;

    public SamplerChain(SamplingOptions options, int vocabSize, int contextCapacity = 4096)
    {
        options.Validate(vocabSize);
        Options = options;
        _candidates = new Candidates(vocabSize);
        _greedy = options.IsGreedy;
        _rng = new Rng(options.Seed ?? (ulong)Random.Shared.NextInt64());
        if (options.RepetitionPenalty != 1 || options.PresencePenalty != 0 || options.FrequencyPenalty != 0)
            _steps.Add(new PenaltySampler(vocabSize, options, contextCapacity));
        if (options.LogitBias is { Count: > 0 } bias) _steps.Add(new LogitBiasSampler(bias));
        if (_greedy) return;
        if (options.Temperature != 1) _steps.Add(new TemperatureSampler(options.Temperature));
        if (options.TopK > 0) _steps.Add(new TopKSampler(options.TopK));
        if (options.TopP < 1) _steps.Add(new TopPSampler(options.TopP));
        if (options.MinP > 0) _steps.Add(new MinPSampler(options.MinP));
    }

    public SamplingOptions Options { get; }

    /// <summary>The candidates as the last <see cref="Sample"/> left them (for tests and diagnostics).</summary>
    public Candidates Candidates => _candidates;

    public int Sample(ReadOnlySpan<float> logits)
    {
        _candidates.Load(logits);
        foreach (ISampler s in _steps) s.Apply(_candidates);
        Span<Candidate> items = _candidates.Items;
        if (_greedy)
        {
            int best = 0;
            for (int i = 1; i < items.Length; i++)
                if (items[i].Logit > items[best].Logit) best = i;
            return items[best].Id;
        }
        _candidates.Softmax();
        double u = _rng.NextDouble(), cumulative = 0;
        for (int i = 0; i < items.Length; i++)
        {
            cumulative += items[i].P;
            if (u < cumulative) return items[i].Id;
        }
        return items[^1].Id;
    }

    public void Accept(int token)
    {
        foreach (ISampler s in _steps) s.Accept(token);
    }

    public void Reset()
    {
        foreach (ISampler s in _steps) s.Reset();
    }
}
