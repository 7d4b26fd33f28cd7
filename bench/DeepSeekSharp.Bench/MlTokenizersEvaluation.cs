using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace DeepSeekSharp.Bench;

/// <summary>Can Microsoft.ML.Tokenizers 2.0 reproduce DeepSeek-V3's tokenizer? Builds its BpeTokenizer from the same
/// tokenizer.json (vocabulary, merges, byte-level, the three Split regexes as a CompositePreTokenizer, the added
/// tokens as special tokens) and counts exact matches over the 335 golden cases.</summary>
internal static class MlTokenizersEvaluation
{
    public static void Run(string repo)
    {
        string dir = Path.Combine(repo, "assets", "tokenizers", "deepseek-v3");
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, "tokenizer.json")));
        JsonElement root = doc.RootElement, model = root.GetProperty("model");
        var vocab = model.GetProperty("vocab").EnumerateObject().Select(p => new KeyValuePair<string, int>(p.Name, p.Value.GetInt32())).ToList();
        var merges = model.GetProperty("merges").EnumerateArray().Select(m => m.GetString()!).ToList();
        var special = root.GetProperty("added_tokens").EnumerateArray()
            .ToDictionary(a => a.GetProperty("content").GetString()!, a => a.GetProperty("id").GetInt32());
        var regexes = root.GetProperty("pre_tokenizer").GetProperty("pretokenizers").EnumerateArray()
            .Where(p => p.GetProperty("type").GetString() == "Split")
            .Select(p => (PreTokenizer)new RegexPreTokenizer(new Regex(p.GetProperty("pattern").GetProperty("Regex").GetString()!, RegexOptions.Compiled), special))
            .ToList();
        BpeTokenizer ml;
        try
        {
            ml = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                SpecialTokens = special,
                PreTokenizer = new CompositePreTokenizer(regexes, special),
                ByteLevel = true,
            });
        }
        catch (Exception e)
        {
            Console.WriteLine($"Microsoft.ML.Tokenizers could not build the tokenizer: {e.GetType().Name}: {e.Message}");
            return;
        }
        int exact = 0, total = 0;
        var failures = new List<string>();
        foreach (string line in File.ReadLines(Path.Combine(repo, "tests", "data", "tokenizer", "cases.jsonl")))
        {
            JsonElement c = JsonDocument.Parse(line).RootElement;
            string text = c.GetProperty("text").GetString()!;
            int[] expected = c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            int[] ids;
            try { ids = ml.EncodeToIds(text).ToArray(); }
            catch (Exception e) { ids = []; failures.Add($"{c.GetProperty("name").GetString()}: {e.GetType().Name}"); }
            total++;
            if (ids.SequenceEqual(expected)) exact++;
            else if (failures.Count < 8) failures.Add($"{c.GetProperty("category").GetString()}/{c.GetProperty("name").GetString()}");
        }
        Console.WriteLine($"Microsoft.ML.Tokenizers 2.0.1: {exact} of {total} golden cases exact");
        foreach (string f in failures.Take(8)) Console.WriteLine("  differs: " + f);
        string corpus = TokenizerBench.Corpus(repo, 4);
        var sw = Stopwatch.StartNew();
        int n = ml.EncodeToIds(corpus).Count;
        Console.WriteLine($"  speed: {Encoding.UTF8.GetByteCount(corpus) / 1e6 / sw.Elapsed.TotalSeconds:F2} MB/s ({n:N0} tokens)");
    }
}
