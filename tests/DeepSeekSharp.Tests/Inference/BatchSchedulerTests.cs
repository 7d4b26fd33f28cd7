using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Model;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Inference;

public class BatchSchedulerTests
{
    private static readonly Lazy<(DeepSeekModel Model, Tokenizer Tokenizer)> Loaded =
        new(() => (DeepSeekModel.Load(RandomModel.V3Tiny), Tokenizer.Load(RandomModel.V3Tiny)));

    private static JsonElement User(string text) => JsonSerializer.SerializeToElement(new[] { new { role = "user", content = text } });

    /// <summary>A generation's whole text and its usage.</summary>
    internal static async Task<(string Text, GenerationUsage Usage)> Collect(IAsyncEnumerable<GenerationUpdate> stream)
    {
        var sb = new System.Text.StringBuilder();
        GenerationUsage? usage = null;
        await foreach (GenerationUpdate u in stream)
        {
            sb.Append(u.Text);
            usage ??= u.Usage;
        }
        return (sb.ToString(), usage!);
    }

    private static readonly string[] Prompts =
    [
        "Hello!", "What is the capital of France?", "Write a haiku about the sea.", "1 2 3 4 5",
        "Explain MLA in one sentence.", "你好，今天天气怎么样？", "List three colours", "Why?",
    ];

    [Fact]
    public async Task EightConcurrentGreedyRequests_GiveExactlyTheSameTokensAsOneAtATime()
    {
        var (model, tok) = Loaded.Value;
        using var engine = new BatchScheduler(model, tok, new BatchOptions { MaxBatch = 8, ContextLength = 256, PrefillChunk = 7 });
        var options = new GenerationOptions { Sampling = new SamplingOptions { Temperature = 0 }, MaxTokens = 16 };
        var alone = new List<string>();
        foreach (string p in Prompts) alone.Add((await Collect(engine.ChatAsync(User(p), options))).Text);
        var together = await Task.WhenAll(Prompts.Select(p => Task.Run(() => Collect(engine.ChatAsync(User(p), options)))));
        Assert.Equal(alone, together.Select(t => t.Text));
        Assert.All(together, t => Assert.Equal(16, t.Usage.CompletionTokens));
        Assert.Equal(0, engine.ActiveSequences);
    }

    [Fact]
    public async Task BatchedScheduler_MatchesTheSingleSequenceGenerator()
    {
        var (model, tok) = Loaded.Value;
        using var engine = new BatchScheduler(model, tok, new BatchOptions { MaxBatch = 2, ContextLength = 256 });
        using var single = new Generator(model, tok, contextLength: 256);
        var options = new GenerationOptions { Sampling = new SamplingOptions { Temperature = 0.8f, Seed = 5 }, MaxTokens = 12 };
        Assert.Equal((await Collect(single.ChatAsync(User("Tell me a story"), options))).Text,
                     (await Collect(engine.ChatAsync(User("Tell me a story"), options))).Text);
    }

    [Fact]
    public async Task CancelledRequest_FreesItsSlot_OthersFinish()
    {
        var (model, tok) = Loaded.Value;
        using var engine = new BatchScheduler(model, tok, new BatchOptions { MaxBatch = 2, ContextLength = 512 });
        using var cts = new CancellationTokenSource();
        var longOne = Task.Run(async () =>
        {
            await foreach (GenerationUpdate _ in engine.ChatAsync(User("go on forever"), new GenerationOptions { MaxTokens = 400 }, cts.Token))
                cts.Cancel();
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => longOne);
        var (_, usage) = await Collect(engine.ChatAsync(User("short"), new GenerationOptions { MaxTokens = 3 }));
        Assert.Equal(3, usage.CompletionTokens);
        for (int i = 0; i < 1000 && engine.ActiveSequences > 0; i++) await Task.Delay(10); // up to 10 s on a slow machine
        Assert.Equal(0, engine.ActiveSequences);
    }

    [Fact]
    public async Task FullQueue_IsRefusedWithAClearMessage()
    {
        var (model, tok) = Loaded.Value;
        using var engine = new BatchScheduler(model, tok, new BatchOptions { MaxBatch = 1, MaxQueue = 1, ContextLength = 512 });
        var options = new GenerationOptions { MaxTokens = 200 };
        var running = new List<Task>();
        Exception? refused = null;
        for (int i = 0; i < 6 && refused is null; i++)
        {
            try
            {
                IAsyncEnumerator<GenerationUpdate> e = engine.ChatAsync(User("x"), options).GetAsyncEnumerator();
                var first = e.MoveNextAsync().AsTask();
                running.Add(first);
                await Task.WhenAny(first, Task.Delay(50));
                if (first.IsFaulted) refused = first.Exception!.InnerException;
            }
            catch (EngineBusyException e) { refused = e; }
        }
        Assert.IsType<EngineBusyException>(refused);
        Assert.Contains("at capacity", refused!.Message);
    }

    [Fact]
    public async Task PromptLongerThanContext_IsRejectedBeforeQueueing()
    {
        var (model, tok) = Loaded.Value;
        using var engine = new BatchScheduler(model, tok, new BatchOptions { MaxBatch = 1, ContextLength = 32 });
        var e = await Assert.ThrowsAsync<ArgumentException>(() => Collect(engine.CompleteAsync(string.Join(" ", Enumerable.Repeat("word", 100)))));
        Assert.Contains("the context holds 32", e.Message);
        Assert.Equal(0, engine.QueueDepth);
    }
}
