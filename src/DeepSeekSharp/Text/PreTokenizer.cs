using System.Text.Json;
using System.Text.RegularExpressions;

namespace DeepSeekSharp.Text;

/// <summary>The pre-tokenizer of a tokenizer.json: a sequence of regex splits, each applied to every piece the
/// previous one produced, followed by the byte-level mapping. Supports <c>Split</c> (behavior Isolated, as
/// DeepSeek-V3 uses), <c>ByteLevel</c> (with or without GPT-2's own regex), and <c>Sequence</c> of those.</summary>
public sealed class PreTokenizer
{
    // GPT-2's pattern, used by ByteLevel when use_regex is true.
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Regex[] _splits;

    public PreTokenizer(IEnumerable<Regex> splits) => _splits = splits.ToArray();

    /// <summary>The regexes, in the order they split.</summary>
    internal IReadOnlyList<Regex> Splits => _splits;

    /// <summary>The name llama.cpp gives this pre-tokenizer (tokenizer.ggml.pre) when it is one of
    /// <see cref="ForGguf"/>'s; null otherwise.</summary>
    public string? GgufName => new[] { "deepseek-v3", "deepseek-llm" }
        .FirstOrDefault(n => ForGguf(n)._splits.Select(r => r.ToString()).SequenceEqual(_splits.Select(r => r.ToString())));

    public static PreTokenizer FromJson(JsonElement spec)
    {
        var splits = new List<Regex>();
        Collect(spec, splits);
        return new PreTokenizer(splits);
    }

    private static void Collect(JsonElement spec, List<Regex> splits)
    {
        if (spec.ValueKind == JsonValueKind.Null) return;
        string type = spec.GetProperty("type").GetString() ?? "";
        switch (type)
        {
            case "Sequence":
                foreach (JsonElement p in spec.GetProperty("pretokenizers").EnumerateArray()) Collect(p, splits);
                break;
            case "Split":
                string behavior = spec.GetProperty("behavior").GetString() ?? "";
                if (behavior != "Isolated" || spec.TryGetProperty("invert", out JsonElement inv) && inv.GetBoolean())
                    throw new NotSupportedException($"tokenizer.json: Split pre-tokenizer with behavior '{behavior}' is not supported; supported: Isolated");
                JsonElement pattern = spec.GetProperty("pattern");
                string regex = pattern.TryGetProperty("Regex", out JsonElement r) ? r.GetString()! : Regex.Escape(pattern.GetProperty("String").GetString()!);
                splits.Add(new Regex(regex, RegexOptions.Compiled | RegexOptions.CultureInvariant));
                break;
            case "ByteLevel":
                if (spec.TryGetProperty("add_prefix_space", out JsonElement aps) && aps.GetBoolean())
                    throw new NotSupportedException("tokenizer.json: ByteLevel pre-tokenizer with add_prefix_space true is not supported");
                if (!spec.TryGetProperty("use_regex", out JsonElement ur) || ur.GetBoolean())
                    splits.Add(new Regex(Gpt2Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant));
                break;
            default:
                throw new NotSupportedException($"tokenizer.json: pre-tokenizer '{type}' is not supported; supported: Sequence, Split (Isolated), ByteLevel");
        }
    }

    /// <summary>The pre-tokenizer a GGUF file names in <c>tokenizer.ggml.pre</c>, with the Split regexes of the
    /// tokenizer.json it was converted from (llama.cpp's llama-vocab.cpp lists the same). <c>deepseek-v3</c>:
    /// DeepSeek-V3/R1; <c>deepseek-llm</c>: DeepSeek-LLM and V2, whose letter class also lists a few astral
    /// alphabets that .NET's UTF-16 regex cannot express (those letters pre-tokenize as other letters do).</summary>
    public static PreTokenizer ForGguf(string pre)
    {
        string[] patterns = pre switch
        {
            "deepseek-v3" =>
            [
                @"\p{N}{1,3}",
                "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
                "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
            ],
            "deepseek-llm" =>
            [
                "[\r\n]",
                // Five letters as escapes: U+1F7D, U+1FD3, U+1FDB, U+2126 and U+212A have canonical equivalents
                // (U+03CE, U+0390, U+038A, U+03A9, 'K'), and a text tool's normalisation once turned three ranges
                // here into reversed ones that no Regex accepts.
                "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1F7Dᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-\u1FD3ῖ-\u1FDBῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212A-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ]+",
                "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
                "(?m)\\s+$",
                "[一-龥ࠀ-一가-퟿]+",
                "\\p{N}+",
            ],
            _ => throw new NotSupportedException($"tokenizer.ggml.pre '{pre}' is not supported; supported: deepseek-v3, deepseek-llm"),
        };
        return new PreTokenizer(patterns.Select(p => new Regex(p, RegexOptions.Compiled | RegexOptions.CultureInvariant)));
    }

    /// <summary>Cuts <paramref name="text"/> into pieces; each match of each regex is a piece of its own, and so is
    /// every stretch between matches. Concatenated, the pieces give the text back. Each regex sees one piece at a
    /// time (lookarounds do not look past it), as Hugging Face tokenizers applies a Sequence.</summary>
    public void Split(string text, List<(int Start, int Length)> pieces)
    {
        pieces.Clear();
        if (text.Length == 0) return;
        // .NET's Regex matches UTF-16 code units, so \p{L}, \p{S}, \p{N} never match a character outside the BMP
        // (emoji, rare CJK). Run the regexes over a proxy with one BMP character of the same category per code
        // point, then map the cuts back.
        int[]? map = null;
        string subject = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') >= 0 ? AstralProxy.Build(text, out map) : text;
        pieces.Add((0, subject.Length));
        var scratch = new List<(int, int)>();
        foreach (Regex regex in _splits)
        {
            scratch.Clear();
            foreach (var (start, length) in pieces)
            {
                int pos = start, end = start + length;
                for (Match m = regex.Match(subject, start, length); m.Success; m = m.NextMatch())
                {
                    if (m.Length == 0) continue;
                    if (m.Index > pos) scratch.Add((pos, m.Index - pos));
                    scratch.Add((m.Index, m.Length));
                    pos = m.Index + m.Length;
                }
                if (pos < end) scratch.Add((pos, end - pos));
            }
            pieces.Clear();
            pieces.AddRange(scratch);
        }
        if (map is null) return;
        for (int i = 0; i < pieces.Count; i++)
        {
            var (start, length) = pieces[i];
            pieces[i] = (map[start], map[start + length] - map[start]);
        }
    }
}

/// <summary>Replaces each supplementary-plane code point by a BMP stand-in of the same Unicode general category
/// that none of the pre-tokenizer patterns names explicitly (not ASCII, not in the CJK/kana ranges).</summary>
internal static class AstralProxy
{
    private static readonly char[] StandIn = BuildStandIns();

    private static char[] BuildStandIns()
    {
        var table = new char[32];
        for (int c = 0xFFFD; c >= 0xA0; c--)
        {
            if (c is >= 0xD800 and <= 0xDFFF or >= 0x3040 and <= 0x30FF or >= 0x4E00 and <= 0x9FA5) continue;
            if (char.IsWhiteSpace((char)c)) continue;
            table[(int)char.GetUnicodeCategory((char)c)] = (char)c; // keeps the lowest such character
        }
        return table;
    }

    /// <param name="map">[proxy index] → index in <paramref name="text"/>; one extra entry for the end</param>
    public static string Build(string text, out int[] map)
    {
        var sb = new System.Text.StringBuilder(text.Length);
        var m = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length; i++)
        {
            m.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                var category = System.Globalization.CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1]));
                char standIn = StandIn[(int)category];
                sb.Append(standIn == '\0' ? text[i] : standIn);
                i++;
            }
            else sb.Append(text[i]);
        }
        m.Add(text.Length);
        map = [.. m];
        return sb.ToString();
    }
}
