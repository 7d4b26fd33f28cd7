using DeepSeekSharp.Linear;
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss bench --model PATH [--quantize q8_0|q4_k|bf16|f32] [--mmap] [--prompt-tokens 512] [--gen-tokens 128]
/// [--threads N] [--repeat R] [--json]</c> and <c>dss bench --memory</c>.</summary>
internal static class BenchCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string?>("--model") { Description = "Hugging Face model folder or .gguf file" };
        var loading = new ModelLoading();
        Option<string?> quantize = loading.Quantize;
        Option<bool> mmap = loading.Mmap;
        var noMmap = new Option<bool>("--no-mmap") { Description = "read weights into anonymous memory (the default)" };
        var promptTokens = new Option<int>("--prompt-tokens") { DefaultValueFactory = _ => 512, Description = "prefill length" };
        var genTokens = new Option<int>("--gen-tokens") { DefaultValueFactory = _ => 128, Description = "decode steps" };
        var threads = new Option<int?>("--threads") { Description = "threads (default: all cores)" };
        var repeat = new Option<int>("--repeat") { DefaultValueFactory = _ => 3, Description = "runs; medians are reported" };
        var json = new Option<bool>("--json") { Description = "print one JSON object" };
        var memory = new Option<bool>("--memory") { Description = "measure the machine's read bandwidth (1 thread and all threads)" };
        var cmd = new Command("bench", "Measure prefill and decode speed, or memory bandwidth")
            { model, quantize, mmap, noMmap, promptTokens, genTokens, threads, repeat, json, memory };
        cmd.SetAction(r =>
        {
            if (r.GetValue(memory))
            {
                double one = ReadBandwidth.Measure(1), all = ReadBandwidth.Measure(Environment.ProcessorCount);
                if (r.GetValue(json))
                    stdout.WriteLine(JsonSerializer.Serialize(new { read_gb_s_1_thread = one / 1e9, read_gb_s_all_threads = all / 1e9, threads = Environment.ProcessorCount }));
                else stdout.WriteLine($"read bandwidth: {one / 1e9:F1} GB/s on 1 thread, {all / 1e9:F1} GB/s on {Environment.ProcessorCount} threads (1 GiB, best of 5)");
                return 0;
            }
            string path = r.GetValue(model) ?? throw new ArgumentException("--model is required (or use --memory)");
            int prompt = r.GetValue(promptTokens), gen = r.GetValue(genTokens), runs = r.GetValue(repeat);
            if (prompt < 0) throw new ArgumentException($"--prompt-tokens must be 0 or more (got {prompt})");
            if (gen < 1) throw new ArgumentException($"--gen-tokens must be 1 or more (got {gen})");
            if (runs < 1) throw new ArgumentException($"--repeat must be 1 or more (got {runs})");
            if (r.GetValue(threads) is { } t) WorkerPool.Configure(t);
            WeightFormat? format = ModelLoading.Format(r.GetValue(quantize));
            var clock = Stopwatch.StartNew();
            using DeepSeekModel m = ModelLoading.Load(path, format, r.GetValue(mmap) && !r.GetValue(noMmap), stderr);
            double loadSeconds = clock.Elapsed.TotalSeconds;
            Result res = Run(m, prompt, gen, runs);
            long rss = PeakRss();
            long active = ActiveBytesPerToken(m);
            double gbs = active * res.DecodeTokS / 1e9;
            if (r.GetValue(json))
                stdout.WriteLine(JsonSerializer.Serialize(new
                {
                    prefill_tok_s = res.PrefillTokS, decode_tok_s = res.DecodeTokS, active_bytes_per_token = active, decode_gb_s = gbs,
                    peak_rss_bytes = rss, load_s = loadSeconds, weight_bytes = m.WeightBytes, threads = WorkerPool.Shared.Threads,
                    prompt_tokens = prompt, gen_tokens = gen, format = format?.ToString() ?? "stored",
                }));
            else
            {
                stdout.WriteLine($"model {path}: {m.WeightBytes / 1e9:F2} GB of weights ({format?.ToString() ?? "as stored"}), loaded in {loadSeconds:F1} s, {WorkerPool.Shared.Threads} threads");
                stdout.WriteLine($"prefill {prompt} tokens: {res.PrefillTokS:F1} tokens/s (median of {runs})");
                stdout.WriteLine($"decode {gen} tokens: {res.DecodeTokS:F2} tokens/s, {active / 1e9:F3} GB active weights per token = {gbs:F1} GB/s");
                stdout.WriteLine($"peak RSS {rss / 1e9:F2} GB");
            }
            return 0;
        });
        return cmd;
    }

    private readonly record struct Result(double PrefillTokS, double DecodeTokS);

    private static Result Run(DeepSeekModel m, int promptTokens, int genTokens, int repeat)
    {
        var rng = new Rng(7);
        ulong ids = (ulong)Math.Min(100000, m.Config.VocabSize); // random ids below 100000 (ordinary text tokens of the real vocabulary)
        int[] prompt = Enumerable.Range(0, promptTokens).Select(_ => (int)(rng.NextUInt64() % ids)).ToArray();
        var prefill = new List<double>();
        var decode = new List<double>();
        var logits = new float[m.Config.VocabSize];
        using InferenceSession s = m.CreateSession(Math.Min(m.Config.MaxPositionEmbeddings, promptTokens + genTokens + 1));
        int[] one = [0];
        for (int run = 0; run < repeat; run++)
        {
            s.Reset();
            var sw = Stopwatch.StartNew();
            for (int start = 0; start < prompt.Length; start += 512)
                s.Forward(prompt.AsSpan(start, Math.Min(512, prompt.Length - start)), logits, allPositions: false);
            prefill.Add(prompt.Length == 0 ? 0 : prompt.Length / sw.Elapsed.TotalSeconds); // no prompt: decode from an empty cache (llama-bench tg)
            sw.Restart();
            for (int i = 0; i < genTokens; i++)
            {
                one[0] = ArgMax(logits);
                s.Forward(one, logits);
            }
            decode.Add(genTokens / sw.Elapsed.TotalSeconds);
        }
        return new Result(Median(prefill), Median(decode));
    }

    private static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    private static double Median(List<double> v)
    {
        v.Sort();
        return v.Count % 2 == 1 ? v[v.Count / 2] : (v[v.Count / 2 - 1] + v[v.Count / 2]) / 2;
    }

    /// <summary>Weight bytes one decoded token reads: one embedding row, every non-expert matrix, and per MoE layer
    /// the router, the shared experts and num_experts_per_tok routed experts (of average size).</summary>
    internal static long ActiveBytesPerToken(DeepSeekModel m)
    {
        ModelWeights w = m.Weights;
        long bytes = w.Embed.RowBytes + w.Head.Bytes;
        foreach (BlockWeights b in w.Blocks)
        {
            AttentionWeights a = b.Attn;
            bytes += a.Q.Matrices().Sum(x => x.Bytes) + a.WkvA.Bytes + a.WkvB.Bytes + a.Wo.Bytes;
            switch (b.Ffn)
            {
                case MlpWeights mlp:
                    bytes += mlp.Matrices().Sum(x => x.Bytes);
                    break;
                case MoeWeights moe:
                    bytes += moe.Router.Bytes + (moe.Shared?.Matrices().Sum(x => x.Bytes) ?? 0);
                    bytes += moe.Experts.Sum(e => e.Matrices().Sum(x => x.Bytes)) / moe.Experts.Length * m.Config.NActivatedExperts;
                    break;
            }
        }
        return bytes;
    }

    /// <summary>VmHWM from /proc/self/status (peak resident set), or the current working set elsewhere.</summary>
    internal static long PeakRss()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line[6..].Trim().Split(' ')[0]) * 1024;
        }
        catch (IOException) { }
        return Environment.WorkingSet;
    }
}
