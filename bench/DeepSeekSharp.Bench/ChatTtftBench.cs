using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Bench;

/// <summary>Time to first token of a two-turn chat through a real <c>dss serve</c> process whose turns share a long
/// system prompt: the first turn prefills it (cold), the second finds it in the server's prefix cache (warm). Each
/// round uses a new system prompt, so every first turn is cold.</summary>
internal static class ChatTtftBench
{
    public static void Run(string model, int words, int rounds, string[] serverOptions)
    {
        using Process server = SoakBench.StartServer(model, serverOptions, out Uri address);
        using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromMinutes(15) };
        Console.WriteLine($"server: {model} {string.Join(' ', serverOptions)}; CPU: {SoakBench.Cpu()}");
        Console.WriteLine("| round | prompt tokens (turn 1 / 2) | cached in turn 2 | TTFT turn 1 (cold) s | TTFT turn 2 (warm) s | ratio |");
        Console.WriteLine("|---|---|---|---|---|---|");
        string[] nouns = ["river", "mountain", "policy", "engine", "garden", "signal", "harbor", "ledger", "planet", "violin", "copper", "lantern"];
        for (int round = 1; round <= rounds; round++)
        {
            var rng = new Random(round);
            string system = string.Join(" ", Enumerable.Range(0, words).Select(_ => $"{nouns[rng.Next(nouns.Length)]}{rng.Next(1000)}"));
            var turn1 = new List<object> { new { role = "system", content = system }, new { role = "user", content = "Summarise the list." } };
            var (t1, u1, a1) = Ask(http, turn1);
            var turn2 = new List<object>(turn1) { new { role = "assistant", content = a1 }, new { role = "user", content = "And the second half?" } };
            var (t2, u2, _) = Ask(http, turn2);
            Console.WriteLine($"| {round} | {u1.GetProperty("prompt_tokens")} / {u2.GetProperty("prompt_tokens")} | {u2.GetProperty("prompt_cache_hit_tokens")} | " +
                $"{t1.ToString("F2", CultureInfo.InvariantCulture)} | {t2.ToString("F2", CultureInfo.InvariantCulture)} | {(t1 / t2).ToString("F1", CultureInfo.InvariantCulture)}x |");
        }
        Console.WriteLine($"SIGTERM: exit {SoakBench.Stop(server)}");
    }

    /// <summary>A streamed greedy chat request of 4 tokens (end of sequence banned): seconds to the first content, the
    /// usage, the reply.</summary>
    private static (double Ttft, JsonElement Usage, string Reply) Ask(HttpClient http, List<object> messages)
    {
        string body = JsonSerializer.Serialize(new
        {
            messages, max_tokens = 4, temperature = 0, stream = true, stream_options = new { include_usage = true },
            logit_bias = new Dictionary<string, int> { ["1"] = -100 },
        });
        var clock = Stopwatch.StartNew();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using HttpResponseMessage response = http.Send(request, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        using var reader = new StreamReader(response.Content.ReadAsStream());
        double? ttft = null;
        JsonElement usage = default;
        var reply = new StringBuilder();
        while (reader.ReadLine() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal) || line == "data: [DONE]") continue;
            JsonElement chunk = JsonDocument.Parse(line[6..]).RootElement;
            if (chunk.TryGetProperty("usage", out JsonElement u) && u.ValueKind == JsonValueKind.Object) usage = u.Clone();
            if (chunk.GetProperty("choices") is { ValueKind: JsonValueKind.Array } choices && choices.GetArrayLength() > 0)
            {
                JsonElement delta = choices[0].GetProperty("delta");
                string piece = (delta.TryGetProperty("content", out JsonElement c) ? c.GetString() : null)
                    ?? (delta.TryGetProperty("reasoning_content", out JsonElement r) ? r.GetString() : null) ?? "";
                if (piece.Length > 0) ttft ??= clock.Elapsed.TotalSeconds;
                reply.Append(piece);
            }
        }
        return (ttft ?? double.NaN, usage, reply.ToString());
    }
}
