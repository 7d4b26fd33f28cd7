namespace DeepSeekSharp.Inference;

/// <summary>Finds stop strings in streamed text, across token boundaries: text that might be the start of a stop
/// string is held back until it is decided.</summary>
public sealed class StopMatcher(IReadOnlyList<string> stops)
{
    private string _held = "";

    /// <summary>Feeds a delta; returns the text safe to emit and whether a stop string was hit (the stop string and
    /// anything after it are dropped).</summary>
    public (string Emit, bool Stopped) Push(string delta)
    {
        if (stops.Count == 0) return (delta, false);
        string text = _held + delta;
        int first = -1;
        foreach (string s in stops)
        {
            int at = text.IndexOf(s, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        if (first >= 0)
        {
            _held = "";
            return (text[..first], true);
        }
        int keep = 0;
        foreach (string s in stops) keep = Math.Max(keep, Text.ReasoningParser.PartialSuffix(text, s));
        _held = text[^keep..];
        return (text[..^keep], false);
    }

    /// <summary>End of stream: held text was not a stop string after all.</summary>
    public string Flush()
    {
        string rest = _held;
        _held = "";
        return rest;
    }
}
