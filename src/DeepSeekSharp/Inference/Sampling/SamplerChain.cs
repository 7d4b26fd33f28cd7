using DeepSeekSharp.Inference.Constraints;
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
    private ulong[]? _mask;  // allowed tokens under a grammar, one bit per id (allocated on first use)

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

    /// <summary>Draws under a grammar whose first token the grammar refused, so the allowed set was computed.</summary>
    public int MaskedDraws { get; private set; }

    /// <summary>The candidates as the last <see cref="Sample(ReadOnlySpan{float})"/> left them (for tests and diagnostics).</summary>
    public Candidates Candidates => _candidates;

    public int Sample(ReadOnlySpan<float> logits)
    {
        Filter(logits);
        return Pick();
    }

    /// <summary>A token the <paramref name="grammar"/> allows with <paramref name="room"/> tokens left after it, drawn
    /// from the filtered distribution restricted to those tokens and renormalised. Lazily: a token is drawn as
    /// without the grammar and kept when allowed; only otherwise are the allowed tokens computed and a token drawn
    /// from them — the same distribution (p(t) + (1 − p(A))·p(t)/p(A) = p(t)/p(A) for t in A), at a fraction of the
    /// cost when the model already writes what the grammar wants. When no filtered candidate is allowed, the
    /// grammar's mask is applied before the filters instead.</summary>
    public int Sample(ReadOnlySpan<float> logits, GrammarMatcher? grammar, int room)
    {
        int token = Sample(logits);
        if (grammar is null || grammar.Allows(token, room)) return token;
        Constrain(logits, grammar, room);
        return Pick();
    }

    /// <summary>Speculative sampling against a deterministic draft: the token at this position given that
    /// <paramref name="draft"/> was proposed for it. Greedy, the argmax (the draft is accepted when they agree).
    /// Otherwise the draft is accepted with probability p(draft) under the filtered distribution p, and on rejection
    /// a token is drawn from p without the draft, renormalised — so every token comes out with probability exactly
    /// p(token), whatever the draft (Leviathan et al. 2023 with a one-point draft distribution). With a
    /// <paramref name="grammar"/>, p is restricted to the tokens it allows, as in
    /// <see cref="Sample(ReadOnlySpan{float}, GrammarMatcher?, int)"/>.</summary>
    public int Sample(ReadOnlySpan<float> logits, int draft, out bool accepted, GrammarMatcher? grammar = null, int room = int.MaxValue)
    {
        if (_greedy)
        {
            int best = Sample(logits, grammar, room);
            accepted = best == draft;
            return best;
        }
        if (grammar is null) Filter(logits);
        else Constrain(logits, grammar, room);
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

    /// <summary>Loads the logits and runs the filters.</summary>
    private void Filter(ReadOnlySpan<float> logits)
    {
        _candidates.Load(logits);
        foreach (ISampler s in _steps) s.Apply(_candidates);
    }

    /// <summary>Leaves the candidates the filters keep from <paramref name="logits"/> that the grammar allows; when the
    /// filters keep none of those, the allowed tokens filtered on their own.</summary>
    private void Constrain(ReadOnlySpan<float> logits, GrammarMatcher grammar, int room)
    {
        MaskedDraws++;
        _mask ??= new ulong[(grammar.Grammar.VocabSize + 63) / 64];
        Array.Clear(_mask);
        grammar.FillMask(_mask, room);
        Filter(logits);
        if (_candidates.KeepAllowed(_mask)) return;
        _candidates.Load(logits);
        _candidates.Disallow(_mask);
        foreach (ISampler s in _steps) s.Apply(_candidates);
        if (!_candidates.KeepAllowed(_mask))
            throw new InvalidOperationException($"the output format's grammar allows no token here ({room} more tokens allowed, at least {grammar.MinBytesLeft} bytes needed to finish)");
    }

    /// <summary>Greedy: the best candidate; otherwise a draw from their softmax.</summary>
    private int Pick()
    {
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
