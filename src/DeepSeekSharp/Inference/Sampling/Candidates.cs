using System.Runtime.InteropServices;

namespace DeepSeekSharp.Inference.Sampling;

[StructLayout(LayoutKind.Sequential)]
public struct Candidate
{
    public int Id;
    public float Logit;
    public float P;
}

/// <summary>The preallocated candidate list a sampler chain works on: one entry per token id at first, then
/// sorted (logit descending, lower id first on ties) and truncated by the filters.</summary>
public sealed class Candidates(int vocab)
{
    private static readonly Comparison<Candidate> ByLogitDesc = (a, b) => b.Logit.CompareTo(a.Logit) is var c && c != 0 ? c : a.Id.CompareTo(b.Id);

    private readonly Candidate[] _items = new Candidate[vocab];

    public int Count { get; private set; }
    /// <summary>Entries [0, SortedCount) are sorted and are the SortedCount best of all Count.</summary>
    public int SortedCount { get; private set; }
    /// <summary>True while entry i is token i (before any sort or truncation).</summary>
    public bool IndexedById { get; private set; }

    public Span<Candidate> Items => _items.AsSpan(0, Count);

    public void Load(ReadOnlySpan<float> logits)
    {
        if (logits.Length > _items.Length) throw new ArgumentException($"{logits.Length} logits; the sampler was built for {_items.Length}", nameof(logits));
        for (int i = 0; i < logits.Length; i++) _items[i] = new Candidate { Id = i, Logit = logits[i] };
        Count = logits.Length;
        SortedCount = 0;
        IndexedById = true;
    }

    /// <summary>Makes the best <paramref name="k"/> candidates sorted at the front (quickselect, then sort of k).</summary>
    public void SortTop(int k)
    {
        k = Math.Min(k, Count);
        if (k <= SortedCount) return;
        Span<Candidate> items = Items;
        if (k < Count) Select(items, k);
        items[..k].Sort(ByLogitDesc);
        SortedCount = k;
        IndexedById = false;
    }

    /// <summary>Keeps the first <paramref name="n"/> (sorted) candidates.</summary>
    public void Truncate(int n)
    {
        if (n > SortedCount) throw new InvalidOperationException("truncate only a sorted prefix");
        Count = Math.Max(n, 1);
        SortedCount = Count;
    }

    /// <summary>Keeps the smallest set of likeliest candidates (logit descending, lower id first on ties) whose P sums to
    /// at least <paramref name="mass"/>, by a weighted quickselect — expected linear time, no sort, nothing allocated;
    /// they are left first, in no particular order. Used when the cut lies too deep for a sorted prefix.</summary>
    public void KeepTopMass(double mass)
    {
        Span<Candidate> a = Items;
        int lo = 0, hi = a.Length, k;
        double above = 0; // the mass of a[..lo), all kept; the cut k lies in (lo, hi]
        while (true)
        {
            if (hi - lo <= 1) { k = hi; break; }
            int mid = lo + (hi - lo) / 2, last = hi - 1;
            // Median of three as the pivot, moved to the end.
            if (Better(a[mid], a[lo])) (a[mid], a[lo]) = (a[lo], a[mid]);
            if (Better(a[last], a[lo])) (a[last], a[lo]) = (a[lo], a[last]);
            if (Better(a[mid], a[last])) (a[mid], a[last]) = (a[last], a[mid]);
            Candidate pivot = a[last];
            int store = lo;
            double better = 0;
            for (int i = lo; i < last; i++)
                if (Better(a[i], pivot))
                {
                    (a[i], a[store]) = (a[store], a[i]);
                    better += a[store].P;
                    store++;
                }
            (a[store], a[last]) = (a[last], a[store]);
            if (above + better >= mass) hi = store;                                  // the cut is among the better ones
            else if (above + better + a[store].P >= mass) { k = store + 1; break; } // the pivot completes the mass
            else { above += better + a[store].P; lo = store + 1; }
        }
        Count = Math.Max(k, 1);
        SortedCount = 0;
        IndexedById = false;
    }

    private static bool Better(in Candidate x, in Candidate y) => x.Logit > y.Logit || x.Logit == y.Logit && x.Id < y.Id;

    /// <summary>Keeps the candidates with P ≥ <paramref name="threshold"/> in their current order (no sort).</summary>
    public void KeepAtLeast(float threshold)
    {
        Span<Candidate> items = Items;
        int kept = 0;
        for (int i = 0; i < items.Length; i++)
            if (items[i].P >= threshold) items[kept++] = items[i];
        if (kept == 0) return; // never empty: threshold ≤ max P in every caller
        Count = kept;
        SortedCount = 0;
        IndexedById = false;
    }

    /// <summary>Keeps, in their current order, the candidates whose bit is set in <paramref name="allowed"/> (one bit
    /// per token id). False, and nothing changed, when none is.</summary>
    public bool KeepAllowed(ReadOnlySpan<ulong> allowed)
    {
        Span<Candidate> items = Items;
        int kept = 0; // compacting in place writes nothing until a candidate is kept
        for (int i = 0; i < items.Length; i++)
            if (IsSet(allowed, items[i].Id) && items[i].Logit > float.NegativeInfinity) items[kept++] = items[i];
        if (kept == 0) return false;
        if (kept < Count)
        {
            Count = kept;
            SortedCount = 0;
            IndexedById = false;
        }
        return true;
    }

    /// <summary>Sets the logit of every candidate whose bit is clear in <paramref name="allowed"/> to −∞ (the list keeps
    /// its shape, so filters that need it indexed by id still run).</summary>
    public void Disallow(ReadOnlySpan<ulong> allowed)
    {
        foreach (ref Candidate c in Items)
            if (!IsSet(allowed, c.Id)) c.Logit = float.NegativeInfinity;
    }

    private static bool IsSet(ReadOnlySpan<ulong> bits, int id) => (uint)(id >> 6) < (uint)bits.Length && (bits[id >> 6] >> (id & 63) & 1) != 0;

    /// <summary>P = softmax(Logit) over the current candidates.</summary>
    public void Softmax()
    {
        Span<Candidate> items = Items;
        float max = float.NegativeInfinity;
        foreach (ref Candidate c in items) max = MathF.Max(max, c.Logit);
        double sum = 0;
        foreach (ref Candidate c in items) sum += c.P = MathF.Exp(c.Logit - max);
        float inv = (float)(1 / sum);
        foreach (ref Candidate c in items) c.P *= inv;
    }

    /// <summary>Partitions so the k best (by logit, then lower id) come first, in no particular order.</summary>
    private static void Select(Span<Candidate> a, int k)
    {
        int lo = 0, hi = a.Length - 1;
        while (lo < hi)
        {
            Candidate pivot = a[lo + (hi - lo) / 2];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (ByLogitDesc(a[i], pivot) < 0) i++;
                while (ByLogitDesc(a[j], pivot) > 0) j--;
                if (i <= j) { (a[i], a[j]) = (a[j], a[i]); i++; j--; }
            }
            if (k - 1 <= j) hi = j;
            else if (k - 1 >= i) lo = i;
            else return;
        }
    }
}
