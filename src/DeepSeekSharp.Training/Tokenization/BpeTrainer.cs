using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Training.Tokenization;

/// <summary>Trains a small byte-level BPE vocabulary in DeepSeek's form, for models trained here from nothing: the
/// same pre-tokenizer as DeepSeek-V3 (digits in groups of up to three, CJK runs, words, punctuation), all 256 byte
/// symbols, then the most frequent adjacent pair merged until the vocabulary is full (ties broken by the pair's text,
/// so a corpus always gives the same vocabulary). Writes a <c>tokenizer.json</c> that
/// <see cref="Tokenizer.FromJson"/> (and Hugging Face's tokenizers) load, with DeepSeek's special tokens and R1's
/// <c>&lt;think&gt;</c> / <c>&lt;/think&gt;</c> as single added tokens at the front.</summary>
public static class BpeTrainer
{
    /// <summary>DeepSeek's special tokens (ids 0, 1, 2 as in V3/R1), the chat roles and tool-call markers R1's
    /// template uses, and the reasoning tags (not special: they are text a reader should see).</summary>
    public static readonly (string Content, bool Special)[] AddedTokens =
    [
        ("<｜begin▁of▁sentence｜>", true), ("<｜end▁of▁sentence｜>", true), ("<｜▁pad▁｜>", true),
        ("<｜User｜>", false), ("<｜Assistant｜>", false), ("<think>", false), ("</think>", false),
        ("<｜tool▁calls▁begin｜>", false), ("<｜tool▁calls▁end｜>", false), ("<｜tool▁call▁begin｜>", false), ("<｜tool▁call▁end｜>", false),
        ("<｜tool▁outputs▁begin｜>", false), ("<｜tool▁outputs▁end｜>", false), ("<｜tool▁output▁begin｜>", false), ("<｜tool▁output▁end｜>", false),
        ("<｜tool▁sep｜>", false),
    ];

    /// <param name="texts">the training corpus (added-token strings in it are skipped, not learnt)</param>
    /// <param name="vocabSize">total ids, added tokens and the 256 bytes included</param>
    /// <param name="preTokenizer">the <c>pre_tokenizer</c> object of a DeepSeek tokenizer.json</param>
    public static JsonObject Train(IEnumerable<string> texts, int vocabSize, JsonElement preTokenizer)
    {
        int first = AddedTokens.Length;
        if (vocabSize < first + 256) throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, $"a byte-level vocabulary needs at least {first + 256} ids");
        PreTokenizer pre = PreTokenizer.FromJson(preTokenizer);

        // Word frequencies over the pre-tokenized, byte-level-encoded corpus.
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        var pieces = new List<(int Start, int Length)>();
        string[] added = [.. AddedTokens.Select(a => a.Content)];
        foreach (string raw in texts)
            foreach (string text in raw.Split(added, StringSplitOptions.RemoveEmptyEntries))
            {
                pieces.Clear();
                pre.Split(text, pieces);
                foreach (var (start, length) in pieces)
                {
                    string word = ByteLevel.Encode(Encoding.UTF8.GetBytes(text.Substring(start, length)));
                    counts[word] = counts.GetValueOrDefault(word) + 1;
                }
            }

        var vocab = new List<string>(vocabSize);
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) Add(ByteLevel.Encode((byte)b).ToString());
        void Add(string token) { index[token] = vocab.Count; vocab.Add(token); }

        // Words as symbol sequences (indices into vocab), with their counts, in a fixed order.
        var words = counts.OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => (Symbols: p.Key.Select(ch => index[ch.ToString()]).ToList(), Count: p.Value)).ToList();
        var merges = new List<(string Left, string Right)>();
        var pairs = new Dictionary<long, long>();
        while (first + vocab.Count < vocabSize)
        {
            pairs.Clear();
            foreach (var (symbols, count) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    long key = ((long)symbols[i] << 32) | (uint)symbols[i + 1];
                    pairs[key] = pairs.GetValueOrDefault(key) + count;
                }
            if (pairs.Count == 0) break; // every word is one token already
            long best = 0, bestCount = -1;
            string bestText = "";
            foreach (var (key, count) in pairs)
            {
                string text = vocab[(int)(key >> 32)] + "\u0000" + vocab[(int)(key & 0xFFFFFFFF)];
                if (count > bestCount || count == bestCount && string.CompareOrdinal(text, bestText) < 0)
                    (best, bestCount, bestText) = (key, count, text);
            }
            int left = (int)(best >> 32), right = (int)(best & 0xFFFFFFFF);
            string merged = vocab[left] + vocab[right];
            merges.Add((vocab[left], vocab[right]));
            Add(merged);
            int id = index[merged];
            foreach (var (symbols, _) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == left && symbols[i + 1] == right)
                    {
                        symbols[i] = id;
                        symbols.RemoveAt(i + 1);
                    }
        }

        var vocabJson = new JsonObject();
        for (int i = 0; i < vocab.Count; i++) vocabJson[vocab[i]] = first + i;
        var addedJson = new JsonArray();
        for (int i = 0; i < first; i++)
            addedJson.Add(new JsonObject
            {
                ["id"] = i, ["content"] = AddedTokens[i].Content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = !AddedTokens[i].Special, ["special"] = AddedTokens[i].Special,
            });
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = addedJson,
            ["normalizer"] = new JsonObject { ["type"] = "Sequence", ["normalizers"] = new JsonArray() },
            ["pre_tokenizer"] = JsonNode.Parse(preTokenizer.GetRawText()),
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["vocab"] = vocabJson,
                ["merges"] = new JsonArray([.. merges.Select(m => (JsonNode)new JsonArray(m.Left, m.Right))]),
            },
        };
    }
}
