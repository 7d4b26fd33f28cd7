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

    /// <summary>The candidates as the last <see cref="Sample(ReadOnlySpan{float})"/> left them (for tests and diagnostics).</summary>
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

    /// <summary>Speculative sampling against a deterministic draft: the token at this position given that
    /// <paramref name="draft"/> was proposed for it. Greedy, the argmax (the draft is accepted when they agree).
    /// Otherwise the draft is accepted with probability p(draft) under the filtered distribution p, and on rejection
    /// a token is drawn from p without the draft, renormalised — so every token comes out with probability exactly
    /// p(token), whatever the draft (Leviathan et al. 2023 with a one-point draft distribution).</summary>
    public int Sample(ReadOnlySpan<float> logits, int draft, out bool accepted)
    {
        if (_greedy)
        {
            int best = Sample(logits);
            accepted = best == draft;
            return best;
        }
        _candidates.Load(logits);
        foreach (ISampler s in _steps) s.Apply(_candidates);
        _candidates.Softmax();
        Span<Candidate> items = _candidates.Items;
        double pDraft = 0;
        for (int i = 0; i < items.Length; i++)
            if (items[i].Id == draft) { pDraft = items[i].P; break; }
        if (_rng.NextDouble() < pDraft)
        {
            accepted = true;
            return draft;
        }
        accepted = false;
        double u = _rng.NextDouble() * (1 - pDraft), cumulative = 0;
        int last = -1;
        for (int i = 0; i < items.Length; i++)
        {
            if (items[i].Id == draft) continue;
            last = items[i].Id;
            cumulative += items[i].P;
            if (u < cumulative) return last;
        }
        return last >= 0 ? last : draft; // rounding left u past the end, or the draft was the only candidate
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
