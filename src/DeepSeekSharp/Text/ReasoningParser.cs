namespace DeepSeekSharp.Text;

/// <summary>Which part of a reply a piece of text belongs to.</summary>
public enum ReplyPart { Reasoning, Answer }

/// <summary>Splits a generated stream into reasoning (between <c>&lt;think&gt;</c> and <c>&lt;/think&gt;</c>) and
/// answer, incrementally. R1's prompt already ends in <c>&lt;think&gt;\n</c>, so the output usually starts inside
/// the reasoning with no opening tag (<paramref name="startsInReasoning"/>); an opening tag at the start is
/// accepted and dropped too. A tag split across deltas is held back until it is decided. Text after
/// <c>&lt;/think&gt;</c> is the answer (leading newlines trimmed); a stream that never closes the tag is all
/// reasoning.</summary>
public sealed class ReasoningParser(bool startsInReasoning)
{
    public const string OpenTag = "<think>", CloseTag = "</think>";

    private enum State { Start, Reasoning, AnswerStart, Answer }

    private State _state = State.Start;
    private string _pending = "";

    /// <summary>Inside the reasoning: after an opening tag (or from the start of a reply that starts in reasoning),
    /// before the closing one.</summary>
    public bool InReasoning => _state == State.Reasoning || _state == State.Start && startsInReasoning;

    /// <summary>Feeds a delta; returns the pieces it completes, in order.</summary>
    public List<(ReplyPart Part, string Text)> Push(string delta)
    {
        var output = new List<(ReplyPart, string)>();
        _pending += delta;
        while (_pending.Length > 0)
        {
            switch (_state)
            {
                case State.Start:
                {
                    string trimmed = _pending.TrimStart();
                    if (trimmed.Length == 0) return output;                 // only whitespace so far
                    if (trimmed.StartsWith(OpenTag, StringComparison.Ordinal))
                    {
                        _pending = trimmed[OpenTag.Length..].TrimStart('\n');
                        _state = State.Reasoning;
                        continue;
                    }
                    if (OpenTag.StartsWith(trimmed, StringComparison.Ordinal)) return output; // could still become <think>
                    // Leading whitespace of the reasoning is dropped (R1 often writes "\n</think>" for no reasoning).
                    if (startsInReasoning) _pending = trimmed;
                    _state = startsInReasoning ? State.Reasoning : State.Answer;
                    continue;
                }
                case State.Reasoning:
                {
                    int close = _pending.IndexOf(CloseTag, StringComparison.Ordinal);
                    if (close >= 0)
                    {
                        if (close > 0) output.Add((ReplyPart.Reasoning, _pending[..close]));
                        _pending = _pending[(close + CloseTag.Length)..];
                        _state = State.AnswerStart;
                        continue;
                    }
                    int keep = PartialSuffix(_pending, CloseTag);
                    if (_pending.Length > keep) output.Add((ReplyPart.Reasoning, _pending[..^keep]));
                    _pending = _pending[^keep..];
                    return output;
                }
                case State.AnswerStart:
                    _pending = _pending.TrimStart('\n');
                    if (_pending.Length == 0) return output;
                    _state = State.Answer;
                    continue;
                default:
                    output.Add((ReplyPart.Answer, _pending));
                    _pending = "";
                    return output;
            }
        }
        return output;
    }

    /// <summary>End of stream: whatever is held back goes out in its current part.</summary>
    public List<(ReplyPart Part, string Text)> Flush()
    {
        var output = new List<(ReplyPart, string)>();
        if (_pending.Length > 0)
        {
            bool reasoning = _state == State.Reasoning || _state == State.Start && startsInReasoning;
            output.Add((reasoning ? ReplyPart.Reasoning : ReplyPart.Answer, _pending));
        }
        _pending = "";
        return output;
    }

    /// <summary>Length of the longest suffix of <paramref name="text"/> that is a proper prefix of <paramref name="tag"/>.</summary>
    internal static int PartialSuffix(string text, string tag)
    {
        for (int n = Math.Min(tag.Length - 1, text.Length); n > 0; n--)
            if (text.AsSpan(text.Length - n).SequenceEqual(tag.AsSpan(0, n))) return n;
        return 0;
    }
}
