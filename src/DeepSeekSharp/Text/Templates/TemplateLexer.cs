using System.Globalization;
using System.Text;

namespace DeepSeekSharp.Text.Templates;

internal enum TokKind { Text, Name, String, Int, Float, Op, PrintOpen, BlockOpen, Close, End }

internal readonly record struct Tok(TokKind Kind, string Value, int Offset);

/// <summary>Cuts a Jinja template into text and tag tokens, applying the whitespace rules Hugging Face uses for
/// chat templates: <c>trim_blocks</c> and <c>lstrip_blocks</c> on, plus <c>-</c> whitespace control.</summary>
internal static class TemplateLexer
{
    private sealed record Raw(char Kind, string Text, int Offset, bool StripBefore, bool StripAfter, bool NoLstrip, List<Tok>? Tokens);

    public static List<Tok> Lex(string src)
    {
        var raws = new List<Raw>();
        int pos = 0;
        while (pos < src.Length)
        {
            int open = NextTagStart(src, pos);
            if (open < 0) { raws.Add(new Raw('t', src[pos..], pos, false, false, false, null)); break; }
            if (open > pos) raws.Add(new Raw('t', src[pos..open], pos, false, false, false, null));
            char kind = src[open + 1];
            int p = open + 2;
            bool stripBefore = p < src.Length && src[p] == '-';
            bool noLstrip = p < src.Length && src[p] == '+';
            if (stripBefore || noLstrip) p++;
            if (kind == '#')
            {
                int close = src.IndexOf("#}", p, StringComparison.Ordinal);
                if (close < 0) throw new TemplateException($"comment opened at offset {open} is never closed");
                bool stripAfter = close > 0 && src[close - 1] == '-';
                raws.Add(new Raw('#', "", open, stripBefore, stripAfter, noLstrip, null));
                pos = close + 2;
                continue;
            }
            var tokens = new List<Tok>();
            string closer = kind == '{' ? "}}" : "%}";
            bool after = LexExpression(src, ref p, closer, tokens);
            raws.Add(new Raw(kind == '{' ? 'p' : 'b', "", open, stripBefore, after, noLstrip, tokens));
            pos = p;
        }
        return Flatten(raws);
    }

    private static int NextTagStart(string src, int from)
    {
        for (int i = src.IndexOf('{', from); i >= 0 && i + 1 < src.Length; i = src.IndexOf('{', i + 1))
            if (src[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    private static List<Tok> Flatten(List<Raw> raws)
    {
        var output = new List<Tok>();
        for (int i = 0; i < raws.Count; i++)
        {
            Raw r = raws[i];
            if (r.Kind == 't')
            {
                string text = r.Text;
                Raw? prev = i > 0 ? raws[i - 1] : null, next = i + 1 < raws.Count ? raws[i + 1] : null;
                if (prev is not null)
                {
                    if (prev.StripAfter) text = text.TrimStart();
                    else if (prev.Kind is 'b' or '#') // trim_blocks: drop the first newline after a block tag
                        text = text.StartsWith("\r\n", StringComparison.Ordinal) ? text[2..] : text.StartsWith('\n') ? text[1..] : text;
                }
                if (next is not null)
                {
                    if (next.StripBefore) text = text.TrimEnd();
                    else if (next.Kind is 'b' or '#' && !next.NoLstrip) // lstrip_blocks: spaces/tabs before a block tag at line start
                    {
                        int lineStart = text.LastIndexOf('\n') + 1;
                        bool atLineStart = lineStart > 0 || i == 0;
                        if (atLineStart && text.AsSpan(lineStart).TrimStart(" \t").IsEmpty) text = text[..lineStart];
                    }
                }
                if (text.Length > 0) output.Add(new Tok(TokKind.Text, text, r.Offset));
                continue;
            }
            if (r.Kind == '#') continue;
            output.Add(new Tok(r.Kind == 'p' ? TokKind.PrintOpen : TokKind.BlockOpen, "", r.Offset));
            output.AddRange(r.Tokens!);
            output.Add(new Tok(TokKind.Close, "", r.Offset));
        }
        output.Add(new Tok(TokKind.End, "", -1));
        return output;
    }

    private static readonly string[] Ops = ["**", "//", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "+", "-", "*", "/", "%", "~", "<", ">", "="];

    /// <summary>Lexes tokens until <paramref name="closer"/>; returns whether it was written <c>-%}</c>/<c>-}}</c>.</summary>
    private static bool LexExpression(string src, ref int p, string closer, List<Tok> tokens)
    {
        int start = p;
        while (true)
        {
            while (p < src.Length && char.IsWhiteSpace(src[p])) p++;
            if (p >= src.Length) throw new TemplateException($"tag opened near offset {start} is never closed with '{closer}'");
            if (src[p] == '-' && string.CompareOrdinal(src, p + 1, closer, 0, 2) == 0) { p += 3; return true; }
            if (string.CompareOrdinal(src, p, closer, 0, 2) == 0) { p += 2; return false; }
            char c = src[p];
            if (c is '\'' or '"') { tokens.Add(new Tok(TokKind.String, ReadString(src, ref p), p)); continue; }
            if (char.IsAsciiDigit(c))
            {
                int s = p;
                while (p < src.Length && (char.IsAsciiDigit(src[p]) || src[p] == '_')) p++;
                bool isFloat = p + 1 < src.Length && src[p] == '.' && char.IsAsciiDigit(src[p + 1]);
                if (isFloat) { p++; while (p < src.Length && char.IsAsciiDigit(src[p])) p++; }
                tokens.Add(new Tok(isFloat ? TokKind.Float : TokKind.Int, src[s..p].Replace("_", ""), s));
                continue;
            }
            if (char.IsLetter(c) || c == '_')
            {
                int s = p;
                while (p < src.Length && (char.IsLetterOrDigit(src[p]) || src[p] == '_')) p++;
                tokens.Add(new Tok(TokKind.Name, src[s..p], s));
                continue;
            }
            int at = p;
            string? op = Ops.FirstOrDefault(o => string.CompareOrdinal(src, at, o, 0, o.Length) == 0);
            if (op is null) throw new TemplateException($"unexpected character '{c}' at offset {p}");
            tokens.Add(new Tok(TokKind.Op, op, p));
            p += op.Length;
        }
    }

    private static string ReadString(string src, ref int p)
    {
        char quote = src[p++];
        var sb = new StringBuilder();
        while (true)
        {
            if (p >= src.Length) throw new TemplateException("string literal is never closed");
            char c = src[p++];
            if (c == quote) return sb.ToString();
            if (c != '\\' || p >= src.Length) { sb.Append(c); continue; }
            char e = src[p++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case '0': sb.Append('\0'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'u' when p + 4 <= src.Length:
                    if (!int.TryParse(src.AsSpan(p, 4), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int code))
                        throw new TemplateException($"'\\u{src.Substring(p, 4)}' at offset {p - 2} is not a \\uXXXX escape");
                    sb.Append((char)code);
                    p += 4;
                    break;
                case '\\' or '\'' or '"': sb.Append(e); break;
                default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes
            }
        }
    }
}

/// <summary>A template that cannot be parsed or rendered (including <c>raise_exception</c>).</summary>
public sealed class TemplateException(string message) : Exception("chat template: " + message);
