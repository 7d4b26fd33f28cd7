namespace DeepSeekSharp.Text;

/// <summary>Finds added tokens (<c>&lt;｜User｜&gt;</c>, ...) in raw text: leftmost occurrence, longest match, via a
/// character trie — what Hugging Face tokenizers does before any pre-tokenization.</summary>
internal sealed class AddedTokenMatcher
{
    private sealed class Node
    {
        public Dictionary<char, Node>? Children;
        public int Id = -1;
    }

    private readonly Node _root = new();
    private readonly Dictionary<string, int> _exact = new(StringComparer.Ordinal);

    public AddedTokenMatcher(IEnumerable<(string Content, int Id)> tokens)
    {
        foreach (var (content, id) in tokens)
        {
            if (content.Length == 0) continue;
            _exact[content] = id;
            Node n = _root;
            foreach (char c in content)
            {
                n.Children ??= new Dictionary<char, Node>();
                if (!n.Children.TryGetValue(c, out Node? child)) n.Children[c] = child = new Node();
                n = child;
            }
            n.Id = id;
        }
    }

    public bool TryGetExact(string content, out int id) => _exact.TryGetValue(content, out id);

    /// <summary>The first added token at or after <paramref name="from"/>: (start, length, id); length 0 when none
    /// (start is then the text's length).</summary>
    public (int Start, int Length, int Id) FindNext(string text, int from)
    {
        if (_root.Children is null) return (text.Length, 0, -1);
        for (int i = from; i < text.Length; i++)
        {
            if (!_root.Children.TryGetValue(text[i], out Node? n)) continue;
            int bestLen = 0, bestId = -1;
            for (int j = i; ;)
            {
                if (n.Id >= 0) (bestLen, bestId) = (j - i + 1, n.Id);
                if (++j >= text.Length || n.Children is null || !n.Children.TryGetValue(text[j], out n)) break;
            }
            if (bestLen > 0) return (i, bestLen, bestId);
        }
        return (text.Length, 0, -1);
    }
}
