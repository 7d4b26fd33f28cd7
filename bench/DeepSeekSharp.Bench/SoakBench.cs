using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace DeepSeekSharp.Bench;

/// <summary>Load and soak against a real <c>dss serve</c> process on loopback: warm-up, then for each concurrency a
/// bounded run of mixed traffic — streaming and plain chat, raw completions, long prompts, clients that hang up
/// mid-stream, bad requests — then SIGTERM. Reports requests/s, aggregate and per-stream tokens/s, time to first
/// token and inter-token latency percentiles, status counts, whether every well-formed request was answered, and
/// the server's resident memory over time (from /proc).</summary>
internal static class SoakBench
{
    private enum Kind { Stream, Plain, LongPrompt, Completion, HangUp, Bad }

    private sealed record Result(Kind Kind, int Status, bool Whole, double Seconds, double? Ttft, List<double> Gaps, int Tokens);

    public static void Run(string model, (int Concurrency, int Requests)[] stages, int maxBatch, string? quantize)
    {
        using Process server = StartServer(model, ["--max-batch", maxBatch.ToString(CultureInfo.InvariantCulture), "--context", "1024",
            "--shutdown-timeout", "10", .. (quantize is null ? Array.Empty<string>() : ["--quantize", quantize])], out Uri address);

        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 256 }) { BaseAddress = address, Timeout = TimeSpan.FromMinutes(5) };
        var rss = new List<(double T, long Bytes)>();
        var clock = Stopwatch.StartNew();
        using var sampling = new CancellationTokenSource();
        Task sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                lock (rss) rss.Add((clock.Elapsed.TotalSeconds, Rss(server.Id)));
                try { await Task.Delay(500, sampling.Token); } catch (OperationCanceledException) { }
            }
        });

        Console.WriteLine($"server: {model}{(quantize is null ? "" : $" --quantize {quantize}")}, max batch {maxBatch}, context 1024; CPU: {Cpu()}");
        RunStage(http, 64, 8, seed: 99); // warm-up: JIT, caches, pools
        long warm = Rss(server.Id);
        Console.WriteLine($"resident after warm-up: {warm / 1e6:0} MB");
        Console.WriteLine();
        Console.WriteLine("| concurrency | requests | wall s | req/s | 2xx | 4xx | 5xx | hung up | well-formed answered | aggregate tok/s | per-stream tok/s p50 | TTFT p50 / p90 / p99 ms | ITL p50 / p90 / p99 ms | RSS end MB |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var (c, requests) in stages)
        {
            var stage = Stopwatch.StartNew();
            List<Result> results = RunStage(http, requests, c, seed: c);
            double wall = stage.Elapsed.TotalSeconds;
            var ok = results.Where(r => r.Kind is not (Kind.Bad or Kind.HangUp)).ToList();
            int answered = ok.Count(r => r.Status == 200 && r.Whole);
            var ttft = results.Where(r => r.Ttft is not null).Select(r => r.Ttft!.Value * 1000).ToList();
            var gaps = results.SelectMany(r => r.Gaps).Select(g => g * 1000).ToList();
            var perStream = results.Where(r => r.Ttft is not null && r.Tokens > 1 && r.Kind != Kind.HangUp)
                .Select(r => (r.Tokens - 1) / Math.Max(r.Seconds - r.Ttft!.Value, 1e-6)).ToList();
            int tokens = results.Sum(r => r.Tokens);
            Console.WriteLine($"| {c} | {results.Count} | {wall:0.0} | {results.Count / wall:0.0} | {results.Count(r => r.Status / 100 == 2)} | {results.Count(r => r.Status / 100 == 4)} | " +
                              $"{results.Count(r => r.Status / 100 == 5)} | {results.Count(r => r.Kind == Kind.HangUp)} | {answered} / {ok.Count} | {tokens / wall:0} | {P(perStream, 50):0} | " +
                              $"{P(ttft, 50):0} / {P(ttft, 90):0} / {P(ttft, 99):0} | {P(gaps, 50):0.0} / {P(gaps, 90):0.0} / {P(gaps, 99):0.0} | {Rss(server.Id) / 1e6:0} |");
        }
        Thread.Sleep(2000);
        long end = Rss(server.Id);
        sampling.Cancel();
        sampler.Wait();
        Console.WriteLine();
        Console.WriteLine($"resident: after warm-up {warm / 1e6:0} MB, at the end (idle 2 s) {end / 1e6:0} MB ({(end - warm) * 100.0 / warm:+0.0;-0.0}%), peak {rss.Max(r => r.Bytes) / 1e6:0} MB");
        Console.WriteLine("resident over time (s: MB): " + string.Join(", ", rss.Where((_, i) => i % Math.Max(1, rss.Count / 24) == 0).Select(r => $"{r.T:0}: {r.Bytes / 1e6:0}")));
        Console.WriteLine($"SIGTERM: exit {Stop(server)}");
    }

    /// <summary>A <c>dss serve</c> process of this build on a free loopback port, once it says where it listens.</summary>
    internal static Process StartServer(string model, string[] options, out Uri address)
    {
        string dss = Path.Combine(AppContext.BaseDirectory, "dss.dll");
        var psi = new ProcessStartInfo("dotnet", [dss, "serve", "--model", model, "--port", "0", .. options])
            { RedirectStandardOutput = true, RedirectStandardError = true };
        Process server = Process.Start(psi)!;
        var log = new StringBuilder();
        server.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.AppendLine(e.Data); };
        server.BeginErrorReadLine();
        string? line;
        Uri? found = null;
        while ((line = server.StandardOutput.ReadLine()) is not null)
            if (Regex.Match(line, @"at (http://\S+/) ") is { Success: true } m) { found = new Uri(m.Groups[1].Value); break; }
        if (found is null) throw new InvalidOperationException("the server did not start:\n" + log);
        _ = Task.Run(() => server.StandardOutput.ReadToEnd());
        address = found;
        return server;
    }

    /// <summary>SIGTERM, then the exit code (killed and an error after 30 s).</summary>
    internal static int Stop(Process server)
    {
        Process.Start("kill", ["-TERM", server.Id.ToString(CultureInfo.InvariantCulture)])!.WaitForExit();
        if (!server.WaitForExit(30_000)) { server.Kill(); throw new InvalidOperationException("the server did not stop within 30 s of SIGTERM"); }
        return server.ExitCode;
    }

    private static List<Result> RunStage(HttpClient http, int requests, int concurrency, int seed)
    {
        var results = new List<Result>();
        int next = -1;
        Task[] workers = Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < requests)
            {
                var rng = new Random(seed * 1_000_003 + i);
                Result r = await One(http, rng);
                lock (results) results.Add(r);
            }
        })).ToArray();
        Task.WaitAll(workers);
        return results;
    }

    private static readonly string[] Words = "the of and a to in is you that it he was for on are as with his they at be this have from".Split(' ');

    private static async Task<Result> One(HttpClient http, Random rng)
    {
        int roll = rng.Next(100);
        Kind kind = roll < 40 ? Kind.Stream : roll < 60 ? Kind.Plain : roll < 70 ? Kind.LongPrompt : roll < 80 ? Kind.Completion : roll < 90 ? Kind.HangUp : Kind.Bad;
        string Text(int n) => string.Join(" ", Enumerable.Range(0, n).Select(_ => Words[rng.Next(Words.Length)]));
        int maxTokens = 16 + rng.Next(112);
        string body = kind switch
        {
            Kind.Completion => JsonSerializer.Serialize(new { prompt = Text(20), max_tokens = maxTokens, temperature = 0.7, seed = rng.Next() }),
            Kind.Bad => rng.Next(4) switch
            {
                0 => "{\"messages\": [",
                1 => """{"messages":[{"role":"user","content":"x\ud800"}]}""",
                2 => """{"messages":[{"role":"user","content":"x"}],"tool_choice":"required"}""", // no tools to call
                _ => JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = Text(3000) } } }),
            },
            _ => JsonSerializer.Serialize(new
            {
                messages = new[] { new { role = "user", content = Text(kind == Kind.LongPrompt ? 500 : 12) } },
                max_tokens = maxTokens, temperature = 0.7, seed = rng.Next(),
                stream = kind is Kind.Stream or Kind.LongPrompt or Kind.HangUp,
                stream_options = kind is Kind.Stream or Kind.LongPrompt or Kind.HangUp ? new { include_usage = true } : null,
            }),
        };
        string path = kind == Kind.Completion ? "/v1/completions" : "/v1/chat/completions";
        var clock = Stopwatch.StartNew();
        using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var cancel = new CancellationTokenSource();
        HttpResponseMessage res = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, cancel.Token);
        int status = (int)res.StatusCode;
        if (!(res.Content.Headers.ContentType?.MediaType == "text/event-stream"))
        {
            string text = await res.Content.ReadAsStringAsync();
            int tokens = status == 200 ? JsonDocument.Parse(text).RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32() : 0;
            return new Result(kind, status, status == 200, clock.Elapsed.TotalSeconds, null, [], tokens);
        }
        using var reader = new StreamReader(await res.Content.ReadAsStreamAsync());
        double? ttft = null, last = null;
        var gaps = new List<double>();
        int events = 0, usageTokens = -1, hangUpAfter = kind == Kind.HangUp ? 2 + rng.Next(8) : int.MaxValue;
        bool done = false;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            string data = line[6..];
            if (data == "[DONE]") { done = true; break; }
            double now = clock.Elapsed.TotalSeconds;
            using JsonDocument doc = JsonDocument.Parse(data);
            if (doc.RootElement.TryGetProperty("usage", out JsonElement u) && u.ValueKind == JsonValueKind.Object)
                usageTokens = u.GetProperty("completion_tokens").GetInt32();
            JsonElement choices = doc.RootElement.GetProperty("choices");
            if (choices.GetArrayLength() == 0 || !choices[0].TryGetProperty("delta", out JsonElement delta)
                || !(delta.TryGetProperty("content", out _) || delta.TryGetProperty("reasoning_content", out _))) continue;
            ttft ??= now;
            if (last is { } l) gaps.Add(now - l);
            last = now;
            if (++events >= hangUpAfter) { cancel.Cancel(); break; }
        }
        return new Result(kind, status, done, clock.Elapsed.TotalSeconds, ttft, gaps, usageTokens >= 0 ? usageTokens : events);
    }

    private static double P(List<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        values.Sort();
        return values[(int)Math.Min(values.Count - 1, Math.Ceiling(p / 100 * values.Count) - 1)];
    }

    private static long Rss(int pid)
    {
        foreach (string l in File.ReadLines($"/proc/{pid}/status"))
            if (l.StartsWith("VmRSS:", StringComparison.Ordinal)) return long.Parse(l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        return 0;
    }

    internal static string Cpu()
    {
        string flags = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal)) ?? "";
        string name = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':')[1].Trim() ?? "?";
        return $"{name}, {Environment.ProcessorCount} cores, " + string.Join(" ", new[] { "avx2", "avx512f", "avx512_vnni", "avx_vnni" }.Where(f => Regex.IsMatch(flags, $@"\b{f}\b")));
    }
}
