using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Model;
using DeepSeekSharp.Server;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Server;

/// <summary>What a hostile or careless client sends: bodies that are not valid Unicode or not of the expected JSON
/// types, parameters the server does not implement, oversized prompts, clients that give up while queued,
/// cross-origin pages, and keys given the wrong way. Each gets a clear 4xx with an OpenAI error body, and the
/// server keeps serving.</summary>
public class HostileInputTests(ServerFixture f) : IClassFixture<ServerFixture>
{
    private async Task<(HttpStatusCode Status, JsonElement Error)> PostBytes(string path, byte[] body)
    {
        using HttpClient http = f.Http();
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        HttpResponseMessage r = await http.PostAsync(path, content);
        string text = await r.Content.ReadAsStringAsync();
        Assert.False(string.IsNullOrEmpty(text), $"{(int)r.StatusCode} with an empty body");
        JsonElement root = JsonDocument.Parse(text).RootElement.Clone();
        return (r.StatusCode, root.TryGetProperty("error", out JsonElement e) ? e : default);
    }

    private Task<(HttpStatusCode Status, JsonElement Error)> Post(string path, string json) => PostBytes(path, Encoding.UTF8.GetBytes(json));

    public static TheoryData<string, string, string?> BadUnicode() => new()
    {
        // A lone surrogate escape, in every place a string is read.
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"a\ud800b"}]}""", "messages[0].content" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":[{"type":"text","text":"\udc00"}]}]}""", "messages[0].content[0].text" },
        { "/v1/completions", """{"prompt":"x\ud800"}""", "prompt" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"stop":["\ud800"]}""", "stop[0]" },
        { "/v1/chat/completions", """{"model":"\ud800","messages":[{"role":"user","content":"x"}]}""", "model" },
        { "/v1/chat/completions", """{"messages":[{"role":"\ud800","content":"x"}]}""", "messages[0].role" },
    };

    [Theory]
    [MemberData(nameof(BadUnicode))]
    public async Task LoneSurrogate_Is400NamingTheField(string path, string body, string? param)
    {
        var (status, error) = await Post(path, body);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("not valid Unicode", error.GetProperty("message").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
    }

    [Fact]
    public async Task InvalidUtf8Bytes_Are400()
    {
        byte[] body = [.. "{\"prompt\":\"a"u8, 0xC3, 0x28, 0xFF, .. "\"}"u8];
        var (status, error) = await PostBytes("/v1/completions", body);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("UTF-8", error.GetProperty("message").GetString());
    }

    public static TheoryData<string, string, string> WrongTypes() => new()
    {
        { """{"messages":[{"role":"user","content":[{"type":5}]}]}""", "parts must be", "messages[0].content" },
        { """{"messages":[{"role":"user","content":"x"}],"response_format":{"type":1}}""", "'response_format.type' must be", "response_format.type" },
        { """{"messages":[{"role":"user","content":"x"}],"temperature":1e999}""", "must be a number", "temperature" },
        { """{"messages":[{"role":"user","content":"x"}],"logit_bias":{"5":1e999}}""", "logit_bias", "logit_bias" },
        { """{"messages":[{"role":"user","content":"x"}],"functions":[{"name":"f"}]}""", "'functions' is not supported", "functions" },
        { """{"messages":[{"role":"user","content":"x"}],"functions":[]}""", "'functions' is not supported", "functions" },
        { """{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}""", "'top_logprobs' needs 'logprobs': true", "top_logprobs" },
        { """{"messages":[{"role":"user","content":"x"}],"audio":{}}""", "'audio' is not supported", "audio" },
        { """{"messages":[{"role":"user","content":"x"}],"temprature":0.5}""", "'temprature' is not supported", "temprature" },
        { """{"messages":[{"role":"user","content":"x"}],"seed":true}""", "must be an integer", "seed" }, // found by fuzzing
    };

    [Theory]
    [MemberData(nameof(WrongTypes))]
    public async Task WrongTypesAndUnimplementedParameters_Are400ByName(string body, string message, string param)
    {
        var (status, error) = await Post("/v1/chat/completions", body);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains(message, error.GetProperty("message").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
    }

    [Fact]
    public async Task AHugeOneWordPrompt_IsRefusedAsTooLong_WithoutTokenisingIt()
    {
        string word = new('x', 6_000_000);
        var clock = Stopwatch.StartNew();
        var (status, error) = await Post("/v1/completions", JsonSerializer.Serialize(new { prompt = word }));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("context_length_exceeded", error.GetProperty("code").GetString());
        // BPE of this word costs tens of seconds; the length bound refuses it before any merge (a generous limit).
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed.TotalSeconds:0.0} s");
    }

    [Fact]
    public async Task CrossOriginRequests_AreRefused_ButPlainClientsAreNot()
    {
        using HttpClient http = f.Http();
        var req = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            // What a web page can send without a preflight: text/plain.
            Content = new StringContent("""{"messages":[{"role":"user","content":"x"}],"max_tokens":1}""", Encoding.UTF8, "text/plain"),
        };
        req.Headers.Add("Origin", "https://evil.example");
        HttpResponseMessage r = await http.SendAsync(req);
        Assert.Equal(HttpStatusCode.Forbidden, r.StatusCode);
        Assert.Equal("origin_not_allowed", JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.False(r.Headers.Contains("Access-Control-Allow-Origin"));
        var (status, _) = await Post("/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"max_tokens":1}""");
        Assert.Equal(HttpStatusCode.OK, status);
    }

    [Fact]
    public async Task AnAllowedOrigin_GetsCorsHeaders_AndPreflight()
    {
        await using var server = new DeepSeekServer(f.Engine, new ServerOptions { Port = 0, ModelId = "m", CorsOrigins = ["http://localhost:3000"] });
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = server.Address };
        var preflight = new HttpRequestMessage(HttpMethod.Options, "/v1/chat/completions");
        preflight.Headers.Add("Origin", "http://localhost:3000");
        preflight.Headers.Add("Access-Control-Request-Method", "POST");
        HttpResponseMessage p = await http.SendAsync(preflight);
        Assert.Equal(HttpStatusCode.NoContent, p.StatusCode);
        Assert.Equal("http://localhost:3000", p.Headers.GetValues("Access-Control-Allow-Origin").Single());
        var other = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        other.Headers.Add("Origin", "http://localhost:3001");
        Assert.Equal(HttpStatusCode.Forbidden, (await http.SendAsync(other)).StatusCode); // (the engine is shared: no ShutdownAsync)
    }

    [Theory]
    [InlineData("Bearer test-key", HttpStatusCode.OK)]
    [InlineData("Bearer test-ke", HttpStatusCode.Unauthorized)]
    [InlineData("Bearer test-key2", HttpStatusCode.Unauthorized)]
    [InlineData("bearer test-key", HttpStatusCode.Unauthorized)]
    [InlineData("test-key", HttpStatusCode.Unauthorized)]
    public async Task ApiKey_OnlyTheExactBearerKeyPasses(string authorization, HttpStatusCode expected)
    {
        using var http = new HttpClient { BaseAddress = f.BaseAddress };
        var req = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        req.Headers.TryAddWithoutValidation("Authorization", authorization);
        Assert.Equal(expected, (await http.SendAsync(req)).StatusCode);
    }

    [Fact]
    public void AnEmptyApiKey_IsAnError_NotNoAuthentication()
    {
        var e = Assert.Throws<ArgumentException>(() => new DeepSeekServer(f.Engine, new ServerOptions { Port = 0, ApiKey = "" }));
        Assert.Contains("empty", e.Message);
    }
}

/// <summary>Queue places: a client that gives up while waiting frees its place at once.</summary>
public class QueueTests
{
    [Fact]
    public async Task QueuedCallersThatGiveUp_LeaveTheQueueAtOnce()
    {
        using var engine = new BatchScheduler(DeepSeekModel.Load(RandomModel.V3Tiny), Tokenizer.Load(RandomModel.V3Tiny),
            new BatchOptions { MaxBatch = 1, MaxQueue = 3, ContextLength = 4096 });
        int[] prompt = Tokenizer.Load(RandomModel.V3Tiny).Encode("Hello");
        // EOS biased away: the first request must hold its slot for the whole test.
        var options = new GenerationOptions { MaxTokens = 4000, Sampling = new() { LogitBias = new Dictionary<int, float> { [engine.Model.Config.EosTokenId ?? 1] = -100 } } };
        using var running = new CancellationTokenSource();
        await using IAsyncEnumerator<GenerationUpdate> first = engine.GenerateAsync(prompt, false, options, running.Token).GetAsyncEnumerator();
        Assert.True(await first.MoveNextAsync()); // it holds the only slot

        using var gaveUp = new CancellationTokenSource();
        var waiting = Enumerable.Range(0, 3).Select(_ => Drain(engine.GenerateAsync(prompt, false, options, gaveUp.Token))).ToArray();
        for (int i = 0; i < 200 && engine.QueueDepth < 3; i++) await Task.Delay(5);
        Assert.Equal(3, engine.QueueDepth);
        Assert.Throws<EngineBusyException>(() => engine.GenerateAsync(prompt, false, options).GetAsyncEnumerator().MoveNextAsync().AsTask().GetAwaiter().GetResult());

        gaveUp.Cancel();
        foreach (Task t in waiting) await Assert.ThrowsAnyAsync<OperationCanceledException>(() => t);
        Assert.Equal(0, engine.QueueDepth);   // while the first request still runs
        Assert.Equal(1, engine.ActiveSequences);
        // Places are free again: three more callers are queued, not refused.
        using var later = new CancellationTokenSource();
        var queued = Enumerable.Range(0, 3).Select(_ => Drain(engine.GenerateAsync(prompt, false, new GenerationOptions { MaxTokens = 1 }, later.Token))).ToArray();
        for (int i = 0; i < 200 && engine.QueueDepth < 3; i++) await Task.Delay(5);
        Assert.Equal(3, engine.QueueDepth);
        running.Cancel();
        await Task.WhenAll(queued);
    }

    private static async Task Drain(IAsyncEnumerable<GenerationUpdate> updates)
    {
        await foreach (GenerationUpdate _ in updates) { }
    }
}
