using System.Net.Http.Json;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Model;
using DeepSeekSharp.Server;
using DeepSeekSharp.Tests.Text;
using DeepSeekSharp.Text;
using Microsoft.Extensions.AI;

namespace DeepSeekSharp.Tests.Server;

/// <summary>The server on the random v3-tiny checkpoint with the V3 tokenizer and another chat template.</summary>
public abstract class TemplateFixture(string template, string modelId) : IAsyncLifetime
{
    public BatchScheduler Engine { get; private set; } = null!;
    public DeepSeekServer Server { get; private set; } = null!;
    private readonly TempDir _dir = new();

    public async Task InitializeAsync()
    {
        File.Copy(Path.Combine(RandomModel.V3Tiny, "tokenizer.json"), _dir.File("tokenizer.json"));
        File.WriteAllText(_dir.File("tokenizer_config.json"), JsonSerializer.Serialize(new
        {
            add_bos_token = true, bos_token = "<｜begin▁of▁sentence｜>", eos_token = "<｜end▁of▁sentence｜>",
            chat_template = File.ReadAllText(template),
        }));
        Engine = new BatchScheduler(DeepSeekModel.Load(RandomModel.V3Tiny), Tokenizer.Load(_dir.Path), new BatchOptions { MaxBatch = 2, ContextLength = 1024 });
        Server = new DeepSeekServer(Engine, new ServerOptions { Port = 0, ModelId = modelId });
        await Server.StartAsync();
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Engine.Dispose();
        _dir.Dispose();
    }
}

/// <summary>A model whose tokenizer carries DeepSeek-R1's chat template: every prompt ends in "&lt;think&gt;\n", so output
/// is reasoning until the model writes &lt;/think&gt; (random weights never do).</summary>
public sealed class R1Fixture() : TemplateFixture(ChatTemplateTests.R1TemplatePath, "r1-random");

public class ReasoningAndChatClientTests(R1Fixture f) : IClassFixture<R1Fixture>
{
    private static readonly object[] User = [new { role = "user", content = "Think about it" }];

    [Fact]
    public async Task R1Chat_NonStreaming_PutsReasoningInReasoningContent()
    {
        using var http = new HttpClient { BaseAddress = f.Server.Address };
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/chat/completions", new { messages = User, max_tokens = 6, temperature = 0 });
        JsonElement body = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
        JsonElement message = body.GetProperty("choices")[0].GetProperty("message");
        Assert.False(string.IsNullOrEmpty(message.GetProperty("reasoning_content").GetString()));
        Assert.Equal("", message.GetProperty("content").GetString());
        Assert.Equal(6, body.GetProperty("usage").GetProperty("completion_tokens_details").GetProperty("reasoning_tokens").GetInt32());
    }

    [Fact]
    public async Task R1Chat_Streaming_SendsReasoningContentDeltas()
    {
        using var http = new HttpClient { BaseAddress = f.Server.Address };
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/chat/completions", new { messages = User, max_tokens = 6, temperature = 0, stream = true });
        string[] events = (await r.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        var deltas = events[1..^2].Select(e => JsonDocument.Parse(e[6..]).RootElement.GetProperty("choices")[0].GetProperty("delta")).ToList();
        Assert.NotEmpty(deltas);
        Assert.All(deltas, d => Assert.True(d.TryGetProperty("reasoning_content", out _)));
    }

    [Fact]
    public async Task AsChatClient_StreamsReasoningAsTextReasoningContent_WithUsageAndLengthFinish()
    {
        IChatClient client = f.Engine.AsChatClient();
        var updates = new List<ChatResponseUpdate>();
        await foreach (ChatResponseUpdate u in client.GetStreamingResponseAsync([new(ChatRole.User, "Why?")], new ChatOptions { MaxOutputTokens = 5, Temperature = 0 }))
            updates.Add(u);
        Assert.Contains(updates, u => u.Contents.OfType<TextReasoningContent>().Any(c => c.Text.Length > 0));
        Assert.DoesNotContain(updates, u => u.Contents.OfType<TextContent>().Any(c => c.Text.Length > 0));
        Assert.Equal(ChatFinishReason.Length, updates[^1].FinishReason);
        UsageDetails usage = updates.SelectMany(u => u.Contents).OfType<UsageContent>().Single().Details;
        Assert.Equal(5, usage.OutputTokenCount);
        Assert.Equal(5, usage.ReasoningTokenCount);
        ChatResponse whole = (await client.GetResponseAsync([new(ChatRole.User, "Why?")], new ChatOptions { MaxOutputTokens = 5, Temperature = 0 }));
        Assert.Equal(5, whole.Usage?.OutputTokenCount);
        Assert.Equal(ChatFinishReason.Length, whole.FinishReason);
    }

    [Fact]
    public async Task AsChatClient_MapsOptions_WithoutChangingTheCallersObject()
    {
        IChatClient client = f.Engine.AsChatClient();
        var options = new ChatOptions { MaxOutputTokens = 4, Temperature = 0.7f, TopP = 0.9f, TopK = 20, Seed = 3, StopSequences = ["zzz"] };
        ChatResponse a = await client.GetResponseAsync([new(ChatRole.User, "Hi")], options);
        ChatResponse b = await client.GetResponseAsync([new(ChatRole.User, "Hi")], options);
        Assert.Equal(string.Concat(a.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>().Select(c => c.Text)),
                     string.Concat(b.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>().Select(c => c.Text))); // same seed
        Assert.Equal(["zzz"], options.StopSequences);
        GenerationOptions mapped = DeepSeekChatClient.Map(options);
        Assert.Equal((0.7f, 0.9f, 20, 3UL, 4), (mapped.Sampling.Temperature, mapped.Sampling.TopP, mapped.Sampling.TopK, mapped.Sampling.Seed!.Value, mapped.MaxTokens!.Value));
        Assert.Equal(new ChatClientMetadata("deepseeksharp", null, "v3-tiny-random").ProviderName, client.GetService<ChatClientMetadata>()!.ProviderName);
    }

    [Fact]
    public async Task AsChatClient_HonoursCancellation()
    {
        IChatClient client = f.Engine.AsChatClient();
        using var cts = new CancellationTokenSource();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (ChatResponseUpdate _ in client.GetStreamingResponseAsync([new(ChatRole.User, "Go")], new ChatOptions { MaxOutputTokens = 200 }, cts.Token))
                cts.Cancel();
        });
    }
}
