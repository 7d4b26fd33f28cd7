using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Inference;

public class GeneratorTests
{
    private static readonly Lazy<Generator> Shared = new(() => Generator.Load(RandomModel.V3Tiny, contextLength: 256));
    private static readonly SemaphoreSlim Lock = new(1, 1); // one generation at a time on the shared generator

    private static async Task<(string Text, GenerationUsage Usage, List<GenerationUpdate> Updates)> Run(Func<Generator, IAsyncEnumerable<GenerationUpdate>> start)
    {
        await Lock.WaitAsync();
        try
        {
            var updates = new List<GenerationUpdate>();
            await foreach (GenerationUpdate u in start(Shared.Value)) updates.Add(u);
            return (string.Concat(updates.Select(u => u.Text)), updates[^1].Usage!, updates);
        }
        finally { Lock.Release(); }
    }

    private static JsonElement User(string text) => JsonSerializer.SerializeToElement(new[] { new { role = "user", content = text } });

    private static readonly GenerationOptions Greedy = new() { Sampling = new SamplingOptions { Temperature = 0 }, MaxTokens = 12 };

    [Fact]
    public async Task Chat_Greedy_StopsAtMaxTokensWithUsage()
    {
        var (text, usage, _) = await Run(g => g.ChatAsync(User("Hello!"), Greedy));
        Assert.Equal(FinishReason.Length, usage.FinishReason);
        Assert.Equal(12, usage.CompletionTokens);
        // BOS, <｜User｜>, "Hello", "!", <｜Assistant｜>
        Assert.Equal(5, usage.PromptTokens);
        Assert.NotEmpty(text);
    }

    [Fact]
    public async Task Greedy_IsRepeatable_AndTextEqualsDecodedTokens()
    {
        var a = await Run(g => g.ChatAsync(User("Count to ten"), Greedy));
        var b = await Run(g => g.ChatAsync(User("Count to ten"), Greedy));
        Assert.Equal(a.Text, b.Text);
    }

    [Fact]
    public async Task SameSeed_SameText()
    {
        var options = new GenerationOptions { Sampling = new SamplingOptions { Temperature = 1, Seed = 99 }, MaxTokens = 10 };
        var a = await Run(g => g.CompleteAsync("Once upon a time", options));
        var b = await Run(g => g.CompleteAsync("Once upon a time", options));
        Assert.Equal(a.Text, b.Text);
    }

    [Fact]
    public async Task StopString_SpanningTokens_EndsTheOutputBeforeIt()
    {
        var (full, _, _) = await Run(g => g.CompleteAsync("The weather", Greedy with { MaxTokens = 20 }));
        Assert.True(full.Length > 8, full);
        string stop = full.Substring(3, 5); // a stop string that most likely spans token boundaries
        var (cut, usage, _) = await Run(g => g.CompleteAsync("The weather", Greedy with { MaxTokens = 20, Stop = [stop] }));
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], cut);
        Assert.Equal(FinishReason.Stop, usage.FinishReason);
    }

    [Fact]
    public async Task EosToken_FinishesWithStopAndNoText()
    {
        var options = Greedy with { Sampling = new SamplingOptions { Temperature = 0, LogitBias = new Dictionary<int, float> { [1] = 100 } } };
        var (text, usage, _) = await Run(g => g.CompleteAsync("Hi", options));
        Assert.Equal("", text);
        Assert.Equal(FinishReason.Stop, usage.FinishReason);
        Assert.Equal(1, usage.CompletionTokens);
    }

    [Fact]
    public async Task PromptEndingInThink_TagsOutputAsReasoningUntilClosed()
    {
        // Force "</think>" (tokens of it) to be likely: bias the first token of "</" ... simpler: raw prompt in reasoning,
        // greedy output never closes the tag on a random model, so every piece is reasoning and counted.
        var (text, usage, updates) = await Run(g => g.CompleteAsync("<｜User｜>Hi<｜Assistant｜><think>\n", Greedy));
        Assert.NotEmpty(text);
        Assert.All(updates.Where(u => u.Text.Length > 0), u => Assert.Equal(ReplyPart.Reasoning, u.Part));
        Assert.Equal(usage.CompletionTokens, usage.ReasoningTokens);
    }

    [Fact]
    public async Task Cancellation_StopsTheStream()
    {
        using var cts = new CancellationTokenSource();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Run(g => Cancelling(g, cts)));
    }

    private static async IAsyncEnumerable<GenerationUpdate> Cancelling(Generator g, CancellationTokenSource cts)
    {
        await foreach (GenerationUpdate u in g.CompleteAsync("Hello", Greedy with { MaxTokens = 100 }, cts.Token))
        {
            yield return u;
            cts.Cancel();
        }
    }

    [Fact]
    public async Task PromptLongerThanContext_ThrowsNamingBothSizes()
    {
        string longPrompt = string.Join(" ", Enumerable.Repeat("word", 400));
        var e = await Assert.ThrowsAsync<ArgumentException>(() => Run(g => g.CompleteAsync(longPrompt, Greedy)));
        Assert.Contains("the context holds 256", e.Message);
    }

    [Fact]
    public async Task BadSamplingOption_ThrowsBeforeGenerating()
    {
        var options = Greedy with { Sampling = new SamplingOptions { TopP = 2 } };
        var e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Run(g => g.CompleteAsync("x", options)));
        Assert.Equal("top_p", e.ParamName);
    }

    [Fact]
    public async Task SecondTurn_ReusesTheCachedPrefix_AndGivesTheSameResultAsAFreshGenerator()
    {
        JsonElement twoTurns = JsonSerializer.SerializeToElement(new[]
        {
            new { role = "user", content = "Hi" }, new { role = "assistant", content = "Hello there." }, new { role = "user", content = "Tell me more" },
        });
        await Run(g => g.ChatAsync(User("Hi"), Greedy));              // leaves "Hi" turn in the cache
        var warm = await Run(g => g.ChatAsync(twoTurns, Greedy));
        using var fresh = Generator.Load(RandomModel.V3Tiny, contextLength: 256);
        var cold = new List<GenerationUpdate>();
        await foreach (GenerationUpdate u in fresh.ChatAsync(twoTurns, Greedy)) cold.Add(u);
        Assert.Equal(string.Concat(cold.Select(u => u.Text)), warm.Text);
    }
}
