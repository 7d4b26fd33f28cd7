using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Text;

/// <summary>A Hugging Face byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json), as DeepSeek-V2/V3/R1
/// ship it. Encoding: added tokens are matched in the raw text first (longest match), the rest is cut by the
/// pre-tokenizer, mapped to the byte-level alphabet and merged by BPE rank. Thread-safe.</summary>
public sealed class Tokenizer
{
    private readonly Dictionary<string, int> _vocab;
    private readonly byte[][] _tokenBytes;          // [id] → UTF-8 bytes the token decodes to
    private readonly string[] _tokenText;           // [id] → token string (vocab or added content)
    private readonly Dictionary<long, (int Rank, int Merged)> _merges; // (left id, right id) → rank, merged id
    private readonly int[] _byteIds;                // [byte] → id of its single-character token
    private readonly AddedTokenMatcher _added;
    private readonly bool[] _special;
    private readonly PreTokenizer _preTokenizer;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly int _maxTokenBytes;            // the longest token: a text of n chars needs ≥ n / this tokens

    /// <summary>Pieces longer than this are not cached, and the cache is cleared past <see cref="MaxCacheEntries"/>,
    /// so it never holds more than a few tens of MB whatever a stranger sends.</summary>
    public const int MaxCachedPieceChars = 32, MaxCacheEntries = 100_000;

    /// <summary>Pieces in the BPE cache now (tests).</summary>
    internal int CachedPieces => _cache.Count;

    private Tokenizer(Dictionary<string, int> vocab, string[] tokenText, bool[] special, Dictionary<long, (int, int)> merges,
        AddedTokenMatcher added, PreTokenizer pre, TokenizerConfig config)
    {
        _vocab = vocab;
        _tokenText = tokenText;
        _special = special;
        _merges = merges;
        _added = added;
        _preTokenizer = pre;
        Config = config;
        _tokenBytes = tokenText.Select(t => t is null ? [] : ByteLevel.Decode(t)).ToArray();
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++)
            _byteIds[b] = vocab.TryGetValue(ByteLevel.Encode((byte)b).ToString(), out int id) ? id
                : throw new InvalidDataException($"tokenizer.json: the vocabulary has no token for byte 0x{b:X2} ('{ByteLevel.Encode((byte)b)}'); a byte-level BPE needs all 256");
        _maxTokenBytes = Math.Max(1, _tokenBytes.Max(b => b.Length)); // added tokens included: still a valid bound
        BosId = config.BosToken is { } bos ? TokenToId(bos) : null;
        EosId = config.EosToken is { } eos ? TokenToId(eos) : null;
    }

    public TokenizerConfig Config { get; }
    /// <summary>Number of token ids (vocabulary plus added tokens): max id + 1.</summary>
    public int VocabSize => _tokenText.Length;
    public int? BosId { get; }
    public int? EosId { get; }

    /// <summary>Loads the tokenizer of a Hugging Face folder (tokenizer.json, tokenizer_config.json) or a GGUF file.</summary>
    public static Tokenizer Load(string directory)
    {
        if (Formats.Gguf.GgufFile.IsGguf(directory) && File.Exists(directory))
        {
            using var gguf = Formats.Gguf.GgufFile.Open(directory);
            return FromGguf(gguf);
        }
        string path = Path.Combine(directory, "tokenizer.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"{directory}: no tokenizer.json", path);
        TokenizerConfig config = TokenizerConfig.Load(directory);
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return FromJson(doc.RootElement, config);
    }

    /// <summary>Builds the tokenizer from a parsed tokenizer.json. Malformed content — a missing member, a value of the
    /// wrong JSON type, invalid text, an id out of range — is an <see cref="InvalidDataException"/>; an unsupported
    /// model or normaliser a <see cref="NotSupportedException"/>.</summary>
    public static Tokenizer FromJson(JsonElement root, TokenizerConfig config) =>
        Formats.JsonShape.Read("tokenizer.json", () => FromJsonCore(root, config));

    private static Tokenizer FromJsonCore(JsonElement root, TokenizerConfig config)
    {
        JsonElement model = root.GetProperty("model");
        string type = model.GetProperty("type").GetString() ?? "";
        if (type != "BPE") throw new NotSupportedException($"tokenizer.json: model type '{type}' is not supported; supported: BPE");
        if (root.TryGetProperty("normalizer", out JsonElement norm) && norm.ValueKind == JsonValueKind.Object
            && !(norm.GetProperty("type").GetString() == "Sequence" && norm.GetProperty("normalizers").GetArrayLength() == 0))
            throw new NotSupportedException($"tokenizer.json: normalizer '{norm.GetProperty("type").GetString()}' is not supported (only an empty Sequence)");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        int maxId = -1;
        foreach (JsonProperty p in model.GetProperty("vocab").EnumerateObject())
        {
            int id = p.Value.GetInt32();
            vocab[p.Name] = id;
            maxId = Math.Max(maxId, id);
        }
        var added = new List<(string Content, int Id, bool Special)>();
        if (root.TryGetProperty("added_tokens", out JsonElement addedJson))
            foreach (JsonElement a in addedJson.EnumerateArray())
            {
                int id = a.GetProperty("id").GetInt32();
                string content = a.GetProperty("content").GetString()
                    ?? throw new InvalidDataException($"tokenizer.json: added token {id} has no content");
                added.Add((content, id, a.TryGetProperty("special", out JsonElement s) && s.GetBoolean()));
                maxId = Math.Max(maxId, id);
            }
        var text = new string[maxId + 1];
        var special = new bool[maxId + 1];
        foreach (var (token, id) in vocab) text[id] = token;
        foreach (var (content, id, isSpecial) in added)
        {
            text[id] = content;
            special[id] = isSpecial;
        }

        var merges = BuildMerges(model.GetProperty("merges").EnumerateArray().Select(m => m switch
        {
            { ValueKind: JsonValueKind.Array } when m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String
                => (m[0].GetString()!, m[1].GetString()!),
            { ValueKind: JsonValueKind.String } => SplitMerge(m.GetString()!),
            _ => throw new InvalidDataException($"tokenizer.json: a merge rule must be \"left right\" or [\"left\", \"right\"], found {m.ValueKind}"),
        }), vocab);
        PreTokenizer pre = PreTokenizer.FromJson(root.GetProperty("pre_tokenizer"));
        return new Tokenizer(vocab, text, special, merges, new AddedTokenMatcher(added.Select(a => (a.Content, a.Id))), pre, config);
    }

    /// <summary>A "left right" merge rule (the left part may itself start with a space character).</summary>
    private static (string, string) SplitMerge(string s)
    {
        int sp = s.IndexOf(' ', 1);
        return sp < 0 ? (s, "") : (s[..sp], s[(sp + 1)..]);
    }

    private static Dictionary<long, (int, int)> BuildMerges(IEnumerable<(string Left, string Right)> rules, Dictionary<string, int> vocab)
    {
        var merges = new Dictionary<long, (int, int)>();
        int rank = 0;
        foreach (var (left, right) in rules)
        {
            if (vocab.TryGetValue(left, out int l) && vocab.TryGetValue(right, out int r) && vocab.TryGetValue(left + right, out int merged))
                merges.TryAdd(Key(l, r), (rank, merged));
            rank++;
        }
        return merges;
    }

    /// <summary>The vocabulary a GGUF file carries (tokenizer.ggml.*: model gpt2, the pre-tokenizer name, tokens,
    /// token types, merges, BOS/EOS ids, add_bos_token, tokenizer.chat_template). Control and user-defined tokens
    /// are matched in raw text like tokenizer.json's added tokens; control tokens count as special; unused
    /// (padding) tokens decode to nothing.</summary>
    public static Tokenizer FromGguf(Formats.Gguf.GgufFile f)
    {
        const int Normal = 1, Control = 3, UserDefined = 4, Unused = 5;
        string model = f.String(Formats.TensorNames.GgufKeys.TokenizerModel) ?? throw new InvalidDataException($"{f.FileName}: no vocabulary (metadata 'tokenizer.ggml.model' is missing)");
        if (model != "gpt2") throw new NotSupportedException($"{f.FileName}: tokenizer.ggml.model '{model}' is not supported; supported: gpt2 (byte-level BPE)");
        PreTokenizer pre = PreTokenizer.ForGguf(f.String(Formats.TensorNames.GgufKeys.TokenizerPre) ?? "default");
        string[] tokens = f.Array<string>(Formats.TensorNames.GgufKeys.Tokens) ?? throw new InvalidDataException($"{f.FileName}: metadata 'tokenizer.ggml.tokens' is missing");
        int[] types = f.Array<int>(Formats.TensorNames.GgufKeys.TokenTypes) ?? Enumerable.Repeat(Normal, tokens.Length).ToArray();
        if (types.Length != tokens.Length)
            throw new InvalidDataException($"{f.FileName}: tokenizer.ggml.token_type has {types.Length} entries for {tokens.Length} tokens");
        string[] mergeRules = f.Array<string>(Formats.TensorNames.GgufKeys.Merges) ?? throw new InvalidDataException($"{f.FileName}: metadata 'tokenizer.ggml.merges' is missing");
        int count = tokens.Length;
        while (count > 0 && types[count - 1] == Unused) count--;
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var text = new string[count];
        var special = new bool[count];
        var added = new List<(string, int)>();
        for (int id = 0; id < count; id++)
        {
            if (types[id] == Unused) continue;
            text[id] = tokens[id];
            if (types[id] is Control or UserDefined) added.Add((tokens[id], id));
            else vocab.TryAdd(tokens[id], id);
            special[id] = types[id] == Control;
        }
        string? TokenAt(string key) => f.Integer(key) is { } i && i >= 0 && i < count ? tokens[i] : null;
        var config = new TokenizerConfig
        {
            BosToken = TokenAt(Formats.TensorNames.GgufKeys.BosId),
            EosToken = TokenAt(Formats.TensorNames.GgufKeys.EosId),
            AddBosToken = f.Flag(Formats.TensorNames.GgufKeys.AddBos) ?? true,
            AddEosToken = f.Flag(Formats.TensorNames.GgufKeys.AddEos) ?? false,
            ChatTemplate = f.String(Formats.TensorNames.GgufKeys.ChatTemplate),
        };
        return new Tokenizer(vocab, text, special, BuildMerges(mergeRules.Select(SplitMerge), vocab), new AddedTokenMatcher(added), pre, config);
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>The id of a token string (vocabulary entry or added token).</summary>
    public int TokenToId(string token)
    {
        if (_added.TryGetExact(token, out int id)) return id;
        if (_vocab.TryGetValue(token, out id)) return id;
        throw new KeyNotFoundException($"token '{token}' is not in the vocabulary");
    }

    public int? TryTokenToId(string token) =>
        _added.TryGetExact(token, out int id) || _vocab.TryGetValue(token, out id) ? id : null;

    /// <summary>Whether the id is an added token (matched in raw text before pre-tokenization).</summary>
    public bool IsAddedToken(int id) => TokenText(id) is { } t && _added.TryGetExact(t, out int a) && a == id;

    /// <summary>The merge rules in rank order, as "left right" strings (GGUF's tokenizer.ggml.merges).</summary>
    public IEnumerable<string> MergeRules() =>
        _merges.OrderBy(kv => kv.Value.Rank).Select(kv => $"{_tokenText[(int)(kv.Key >> 32)]} {_tokenText[(int)(uint)kv.Key]}");

    /// <summary>The pre-tokenizer's name in GGUF (tokenizer.ggml.pre), or null when it is none llama.cpp knows.</summary>
    public string? GgufPreName => _preTokenizer.GgufName;

    public bool IsSpecial(int id) => (uint)id < (uint)_special.Length && _special[id];

    /// <summary>Encodes text. <paramref name="addBos"/>: prepend BOS as transformers does when
    /// tokenizer_config.json says add_bos_token (null = follow the config). <paramref name="maxTokens"/>: throw
    /// <see cref="PromptTooLongException"/> as soon as the ids cannot fit in that many — before the work, where a
    /// lower bound (characters / the longest token's bytes) already says so.</summary>
    public int[] Encode(string text, bool? addBos = null, int maxTokens = int.MaxValue)
    {
        var ids = new List<int>((int)Math.Min(text.Length / 3 + 2, (long)maxTokens + 1));
        if ((addBos ?? Config.AddBosToken) && BosId is { } bos) ids.Add(bos);
        var pieces = new List<(int, int)>();
        int pos = 0;
        while (pos < text.Length)
        {
            var (at, length, id) = _added.FindNext(text, pos);
            EncodeOrdinary(text, pos, at - pos, pieces, ids, maxTokens);
            if (length == 0) break;
            ids.Add(id);
            if (ids.Count > maxTokens) throw new PromptTooLongException(maxTokens);
            pos = at + length;
        }
        return [.. ids];
    }

    private void EncodeOrdinary(string text, int start, int length, List<(int Start, int Length)> pieces, List<int> ids, int maxTokens)
    {
        if (length == 0) return;
        MustFit(ids.Count, length, maxTokens);
        string segment = start == 0 && length == text.Length ? text : text.Substring(start, length);
        _preTokenizer.Split(segment, pieces);
        foreach (var (s, l) in pieces)
        {
            MustFit(ids.Count, l, maxTokens);
            string piece = segment.Substring(s, l);
            if (!_cache.TryGetValue(piece, out int[]? merged))
            {
                merged = Bpe(piece);
                if (piece.Length <= MaxCachedPieceChars)
                {
                    if (_cache.Count >= MaxCacheEntries) _cache.Clear();
                    _cache[piece] = merged;
                }
            }
            ids.AddRange(merged);
            if (ids.Count > maxTokens) throw new PromptTooLongException(maxTokens);
        }
    }

    /// <summary>n characters are at least n UTF-8 bytes, so at least n / (longest token's bytes) tokens.</summary>
    private void MustFit(int have, int chars, int maxTokens)
    {
        if (have + (chars + (long)_maxTokenBytes - 1) / _maxTokenBytes > maxTokens) throw new PromptTooLongException(maxTokens);
    }

    /// <summary>BPE of one pre-token: start from its UTF-8 bytes, repeatedly merge the adjacent pair with the lowest
    /// merge rank (leftmost on ties). Short pieces use a direct scan; long ones a heap over a linked list, so a
    /// 10 KB word costs n log n, not n².</summary>
    private int[] Bpe(string piece)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(piece);
        var symbols = new List<int>(bytes.Length);
        foreach (byte b in bytes) symbols.Add(_byteIds[b]);
        if (symbols.Count > 48) return BpeLong(symbols);
        while (symbols.Count > 1)
        {
            int bestRank = int.MaxValue, bestAt = -1, bestId = 0;
            for (int i = 0; i + 1 < symbols.Count; i++)
                if (_merges.TryGetValue(Key(symbols[i], symbols[i + 1]), out var m) && m.Rank < bestRank)
                    (bestRank, bestAt, bestId) = (m.Rank, i, m.Merged);
            if (bestAt < 0) break;
            symbols[bestAt] = bestId;
            symbols.RemoveAt(bestAt + 1);
        }
        return [.. symbols];
    }

    private int[] BpeLong(List<int> symbols)
    {
        int n = symbols.Count;
        int[] id = [.. symbols], next = new int[n], prev = new int[n];
        for (int i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; }
        var heap = new PriorityQueue<(int Left, int Right, int LeftId, int RightId, int Merged), (int Rank, int Pos)>();
        void Push(int left)
        {
            int right = left >= 0 ? next[left] : -1;
            if (left < 0 || right < 0) return;
            if (_merges.TryGetValue(Key(id[left], id[right]), out var m))
                heap.Enqueue((left, right, id[left], id[right], m.Merged), (m.Rank, left));
        }
        for (int i = 0; i + 1 < n; i++) Push(i);
        while (heap.TryDequeue(out var e, out _))
        {
            // stale when either side was merged away or changed since this pair was queued
            if (id[e.Left] != e.LeftId || next[e.Left] != e.Right || id[e.Right] != e.RightId) continue;
            id[e.Left] = e.Merged;
            id[e.Right] = -1;
            next[e.Left] = next[e.Right];
            if (next[e.Right] >= 0) prev[next[e.Right]] = e.Left;
            Push(prev[e.Left]);
            Push(e.Left);
        }
        var result = new List<int>();
        for (int i = 0; i >= 0; i = next[i]) result.Add(id[i]);
        return [.. result];
    }

    /// <summary>The UTF-8 bytes a token stands for; empty for ids the tokenizer never produces (a model's
    /// embedding may have more rows than the tokenizer has tokens: DeepSeek-V3 129,280 vs 128,815).</summary>
    public ReadOnlySpan<byte> TokenBytes(int id) => (uint)id < (uint)_tokenBytes.Length ? _tokenBytes[id] : [];

    /// <summary>The token's string as stored (byte-level form for vocabulary entries).</summary>
    public string? TokenText(int id) => (uint)id < (uint)_tokenText.Length ? _tokenText[id] : null;

    /// <summary>Decodes ids to text; invalid UTF-8 becomes U+FFFD. Special tokens are kept unless skipped.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (skipSpecialTokens && IsSpecial(id)) continue;
            bytes.AddRange(TokenBytes(id));
        }
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }
}

/// <summary>A text needs more tokens than the limit it was encoded against.</summary>
public sealed class PromptTooLongException(int limit) : Exception($"the text needs more than {limit} tokens")
{
    /// <summary>The limit it was encoded against.</summary>
    public int Limit { get; } = limit;
}
