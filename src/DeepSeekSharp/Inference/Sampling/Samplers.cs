namespace DeepSeekSharp.Inference.Sampling;

/// <summary>One step of a sampler chain.</summary>
public interface ISampler
{
    void Apply(Candidates c);
    /// <summary>Called with each token that joins the sequence (prompt tokens too, for the penalties).</summary>
    void Accept(int token) { }
    void Reset() { }
}

/// <summary>Repetition (CTRL-style), presence and frequency (OpenAI-style) penalties over the last N tokens.</summary>
public sealed class PenaltySampler : ISampler
{
    private readonly float _repetition, _presence, _frequency;
    private readonly int[] _counts;     // [vocab] occurrences in the window
    private readonly int[] _window;     // ring buffer of the last N tokens
    private readonly List<int> _seen = []; // each id at most once; ids whose count fell to zero are pruned lazily
    private readonly bool[] _listed;     // [vocab] id is in _seen
    private int _next, _filled;

    public PenaltySampler(int vocab, SamplingOptions o, int capacity)
    {
        (_repetition, _presence, _frequency) = (o.RepetitionPenalty, o.PresencePenalty, o.FrequencyPenalty);
        _counts = new int[vocab];
        _listed = new bool[vocab];
        _window = new int[o.PenaltyWindow < 0 ? Math.Max(capacity, 1) : Math.Max(o.PenaltyWindow, 1)];
        _seen.Capacity = _window.Length;
    }

    public void Accept(int token)
    {
        if (_filled == _window.Length) _counts[_window[_next]]--;
        else _filled++;
        _window[_next] = token;
        _next = (_next + 1) % _window.Length;
        _counts[token]++;
        if (!_listed[token]) { _listed[token] = true; _seen.Add(token); }
        if (_seen.Count >= _window.Length * 2) Prune();
    }

    private void Prune()
    {
        int kept = 0;
        for (int i = 0; i < _seen.Count; i++)
        {
            int id = _seen[i];
            if (_counts[id] > 0) _seen[kept++] = id;
            else _listed[id] = false;
        }
        _seen.RemoveRange(kept, _seen.Count - kept);
    }

    public void Apply(Candidates c)
    {
        if (!c.IndexedById) throw new InvalidOperationException("penalties must run before candidates are sorted");
        Span<Candidate> items = c.Items;
        foreach (int id in _seen)
        {
            int n = _counts[id];
            if (n == 0 || id >= items.Length) continue;
            ref float logit = ref items[id].Logit;
            if (_repetition != 1f) logit = logit > 0 ? logit / _repetition : logit * _repetition;
            logit -= n * _frequency + _presence;
        }
    }

    public void Reset()
    {
        Array.Clear(_counts);
        Array.Clear(_listed);
        _seen.Clear();
        _next = _filled = 0;
    }
}

public sealed class LogitBiasSampler(IReadOnlyDictionary<int, float> bias) : ISampler
{
    public void Apply(Candidates c)
    {
        Span<Candidate> items = c.Items;
        foreach (var (id, b) in bias) items[id].Logit += b;
    }
}

public sealed class TemperatureSampler(float temperature) : ISampler
{
    public void Apply(Candidates c)
    {
        float inv = 1f / temperature;
        foreach (ref Candidate x in c.Items) x.Logit *= inv;
    }
}

public sealed class TopKSampler(int k) : ISampler
{
    public void Apply(Candidates c)
    {
        c.SortTop(k);
        c.Truncate(Math.Min(k, c.Count));
    }
}

/// <summary>Keeps the smallest set of most likely tokens whose mass reaches p. Peaked distributions (real models)
/// are cut within a short sorted prefix; flat ones (hundreds of thousands of similar tokens) by bisecting on the
/// probability threshold τ — the set is {P ≥ τ} for the largest τ whose set still reaches p — without sorting.</summary>
public sealed class TopPSampler(float p) : ISampler
{
    public void Apply(Candidates c)
    {
        c.Softmax();
        float maxP = 0;
        foreach (ref Candidate x in c.Items) maxP = MathF.Max(maxP, x.P);
        for (int k = Math.Min(64, c.Count); k <= 512 || k == c.Count; k = Math.Min(k * 8, c.Count))
        {
            if (k < c.Count && (double)k * maxP < p) continue; // k tokens cannot reach p: skip sorting them
            c.SortTop(k);
            double cumulative = 0;
            Span<Candidate> items = c.Items;
            for (int i = 0; i < k; i++)
            {
                cumulative += items[i].P;
                if (cumulative >= p) { c.Truncate(i + 1); return; }
            }
            if (k == c.Count) return;
        }
        c.KeepTopMass(p); // the cut lies deep (a flat distribution): select, do not sort
    }
}

public sealed class MinPSampler(float minP) : ISampler
{
    public void Apply(Candidates c)
    {
        c.Softmax();
        Span<Candidate> items = c.Items;
        float max = 0;
        foreach (ref Candidate x in items) max = MathF.Max(max, x.P);
        c.KeepAtLeast(minP * max);
    }
}
