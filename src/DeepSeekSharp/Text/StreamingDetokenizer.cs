using System.Text;

namespace DeepSeekSharp.Text;

/// <summary>Turns generated token ids into text deltas, emitting a character only once all of its UTF-8 bytes
/// have arrived (a character split across tokens comes out once, whole).</summary>
public sealed class StreamingDetokenizer(Tokenizer tokenizer, bool skipSpecialTokens = false)
{
    private readonly Decoder _decoder = new UTF8Encoding(false, false).GetDecoder();
    private char[] _chars = new char[64];

    /// <summary>The text that token <paramref name="id"/> completes (possibly empty).</summary>
    public string Push(int id)
    {
        if (skipSpecialTokens && tokenizer.IsSpecial(id)) return "";
        ReadOnlySpan<byte> bytes = tokenizer.TokenBytes(id);
        int needed = _decoder.GetCharCount(bytes, flush: false);
        if (needed > _chars.Length) _chars = new char[Math.Max(needed, _chars.Length * 2)];
        int n = _decoder.GetChars(bytes, _chars, flush: false);
        return new string(_chars, 0, n);
    }

    /// <summary>Whatever incomplete bytes remain, as replacement characters (end of generation).</summary>
    public string Flush()
    {
        int n = _decoder.GetChars(ReadOnlySpan<byte>.Empty, _chars, flush: true);
        return new string(_chars, 0, n);
    }

    public void Reset() => _decoder.Reset();
}
