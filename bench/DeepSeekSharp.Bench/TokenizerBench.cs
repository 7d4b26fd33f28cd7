using System.Diagnostics;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Bench;

/// <summary>Single-thread encode throughput on a few MB of mixed text (every golden tokenizer case — English, code,
/// CJK, Arabic, emoji, numbers, long documents — concatenated and repeated), median of 5 runs. The piece cache is
/// cleared before each run by loading a fresh tokenizer, so the figure includes BPE work, not only cache hits on
/// the repeated text's first pass... later passes do hit the cache, as they would on real text.</summary>
internal static class TokenizerBench
{
    public static void Run(string repo, double megabytes)
    {
        string corpus = Corpus(repo, megabytes);
        long bytes = Encoding.UTF8.GetByteCount(corpus);
        string dir = Path.Combine(repo, "assets", "tokenizers", "deepseek-v3");
        var times = new List<double>();
        int tokens = 0;
        for (int run = 0; run < 5; run++)
        {
            Tokenizer tok = Tokenizer.Load(dir); // fresh cache every run
            var sw = Stopwatch.StartNew();
            tokens = tok.Encode(corpus, addBos: false).Length;
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        double median = times[2];
        Console.WriteLine($"DeepSeekSharp tokenizer: {bytes / 1e6:F2} MB mixed text, {tokens:N0} tokens, median {median * 1000:F0} ms " +
                          $"= {bytes / 1e6 / median:F2} MB/s, {tokens / median / 1e6:F2} M tokens/s (single thread, cold cache each run)");
    }

    internal static string Corpus(string repo, double megabytes)
    {
        var texts = File.ReadLines(Path.Combine(repo, "tests", "data", "tokenizer", "cases.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("text").GetString()!).ToList();
        var sb = new StringBuilder();
        for (int i = 0; Encoding.UTF8.GetByteCount(sb.ToString()) < megabytes * 1e6 && i < 100000; i++)
        {
            foreach (string t in texts) sb.Append(t).Append('\n');
            if (sb.Length > megabytes * 1e6 / 4 && Encoding.UTF8.GetByteCount(sb.ToString()) >= megabytes * 1e6) break;
        }
        return sb.ToString();
    }
}
