using System.Diagnostics;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Cli;

/// <summary>An observer told where each forward pass it watches begins and ends (<c>dss bench</c>'s per-pass counts and timings).</summary>
internal interface IPassObserver : IActivationObserver
{
    /// <summary>Called just before a forward pass.</summary>
    void BeginPass();

    /// <summary>Called just after a forward pass.</summary>
    void EndPass();
}

/// <summary>Where a forward pass spends its time, part by part (<c>dss bench --profile</c>): the time between two
/// consecutive intermediates the model reports to its observer (<see cref="TensorName"/>) is charged to the part that
/// produced the second, and the time from the final norm to the end of the pass to the output head. The observer
/// only reads a clock, so the pass runs as it does unobserved.</summary>
internal sealed class PartTimer : IPassObserver
{
    public const int Embedding = 0, Projections = 1, Attention = 2, OutputProjection = 3, Router = 4, Experts = 5, Mlp = 6,
        Norms = 7, Head = 8;

    /// <summary>The parts' names, in the order of their indices (the JSON keys of <c>--profile</c>).</summary>
    public static readonly string[] Names =
        ["embedding", "q_kv_projections", "attention", "output_projection", "router", "experts", "dense_mlp", "norms_residuals", "head"];

    private readonly long[] _ticks = new long[Names.Length];
    private long _last;
    private string? _previous;

    /// <summary>Passes timed so far.</summary>
    public int Passes { get; private set; }

    public void BeginPass()
    {
        _previous = null;
        _last = Stopwatch.GetTimestamp();
    }

    /// <summary>What followed the final norm was the output head.</summary>
    public void EndPass()
    {
        Charge(Head);
        Passes++;
    }

    public void OnTensor(string name, int layer, ReadOnlySpan<float> values, int rows, int cols) => Charge(name switch
    {
        TensorName.AttnNorm when _previous is null => Embedding, // the first layer's norm: the embedding rows before it
        TensorName.Q or TensorName.KvCmpr => Projections,
        TensorName.KqvOut => Attention, // the latent's norm, RoPE, the cache and the attention itself
        TensorName.AttnOut => OutputProjection,
        TensorName.FfnMoeLogits => Router,
        TensorName.FfnOut => _previous == TensorName.FfnMoeLogits ? Experts : Mlp,
        TensorName.ResultOutput => Head, // the head over every position (a pass verifying drafts)
        _ => Norms,
    }, name);

    private void Charge(int part, string? name = null)
    {
        long now = Stopwatch.GetTimestamp();
        _ticks[part] += now - _last;
        _last = now;
        _previous = name;
    }

    /// <summary>Milliseconds of each part over every pass timed, by name.</summary>
    public Dictionary<string, double> Milliseconds() => ByName(i => _ticks[i] * 1e3 / Stopwatch.Frequency);

    /// <summary>A value for each part (<paramref name="value"/> of its index), by the part's name.</summary>
    public static Dictionary<string, T> ByName<T>(Func<int, T> value) =>
        Names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => value(p.i));

    /// <summary>Mean milliseconds per pass of each part, by name.</summary>
    public Dictionary<string, double> MillisecondsPerPass() =>
        Milliseconds().ToDictionary(kv => kv.Key, kv => Passes == 0 ? 0 : kv.Value / Passes);
}
