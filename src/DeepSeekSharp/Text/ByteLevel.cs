namespace DeepSeekSharp.Text;

/// <summary>GPT-2's byte-level alphabet: every byte maps to one printable character (printable Latin-1 bytes to
/// themselves, the rest to U+0100 upwards), so any UTF-8 text becomes a string over 256 symbols.</summary>
public static class ByteLevel
{
    private static readonly char[] ByteToChar = new char[256];
    private static readonly Dictionary<char, byte> CharToByte = new();

    static ByteLevel()
    {
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            char c = printable ? (char)b : (char)(256 + next++);
            ByteToChar[b] = c;
            CharToByte[c] = (byte)b;
        }
    }

    public static char Encode(byte b) => ByteToChar[b];

    /// <summary>The byte-level string of some UTF-8 bytes.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        return string.Create(bytes.Length, bytes.ToArray(), static (dst, src) =>
        {
            for (int i = 0; i < src.Length; i++) dst[i] = ByteToChar[src[i]];
        });
    }

    /// <summary>The bytes of a token string: alphabet characters give their byte; any other character (in added
    /// tokens such as <c>&lt;｜User｜&gt;</c>) gives its own UTF-8 bytes, as HF's ByteLevel decoder does.</summary>
    public static byte[] Decode(string token)
    {
        var bytes = new List<byte>(token.Length);
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < token.Length; i++)
        {
            if (CharToByte.TryGetValue(token[i], out byte b)) { bytes.Add(b); continue; }
            int len = char.IsHighSurrogate(token[i]) && i + 1 < token.Length
                ? System.Text.Encoding.UTF8.GetBytes(token.AsSpan(i++, 2), utf8)
                : System.Text.Encoding.UTF8.GetBytes(token.AsSpan(i, 1), utf8);
            for (int k = 0; k < len; k++) bytes.Add(utf8[k]);
        }
        return [.. bytes];
    }
}
