using System.ClientModel;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using ChatMessage = OpenAI.Chat.ChatMessage;
using ChatFinishReason = OpenAI.Chat.ChatFinishReason;

namespace DeepSeekSharp.Tests.Server;

/// <summary>The server driven by the official OpenAI .NET client and by Microsoft.Extensions.AI's OpenAI IChatClient.</summary>
public class OpenAiClientTests(ServerFixture f) : IClassFixture<ServerFixture>
{
    private ChatClient Client() => new(f.ModelId, new ApiKeyCredential(ServerFixture.ApiKey),
        new OpenAIClientOptions { Endpoint = new Uri(f.BaseAddress, "/v1") });

    [Fact]
    public async Task OpenAiClient_NonStreaming_ReturnsContentFinishReasonAndUsage()
    {
        ChatCompletion c = await Client().CompleteChatAsync([new UserChatMessage("Hello!")],
            new ChatCompletionOptions { MaxOutputTokenCount = 6, Temperature = 0 });
        Assert.Equal(ChatFinishReason.Length, c.FinishReason);
        Assert.Equal(6, c.Usage.OutputTokenCount);
        Assert.Equal(5, c.Usage.InputTokenCount); // BOS <｜User｜> Hello ! <｜Assistant｜>
        Assert.Equal(c.Usage.InputTokenCount + c.Usage.OutputTokenCount, c.Usage.TotalTokenCount);
        Assert.Equal(ChatMessageRole.Assistant, c.Role);
    }

    [Fact]
    public async Task OpenAiClient_Streaming_GivesTheSameTextAsNonStreaming()
    {
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0 };
        ChatMessage[] messages = [new SystemChatMessage("Be brief."), new UserChatMessage("Name a fruit.")];
        ChatCompletion whole = await Client().CompleteChatAsync(messages, options);
        var streamed = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (StreamingChatCompletionUpdate u in Client().CompleteChatStreamingAsync(messages, options))
        {
            foreach (ChatMessageContentPart p in u.ContentUpdate) streamed.Append(p.Text);
            finish ??= u.FinishReason;
        }
        Assert.Equal(string.Concat(whole.Content.Select(p => p.Text)), streamed.ToString());
        Assert.Equal(ChatFinishReason.Length, finish);
    }

    [Fact]
    public async Task OpenAiClient_WrongApiKey_IsRejected()
    {
        var bad = new ChatClient(f.ModelId, new ApiKeyCredential("wrong"), new OpenAIClientOptions { Endpoint = new Uri(f.BaseAddress, "/v1") });
        var e = await Assert.ThrowsAsync<ClientResultException>(() => bad.CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(401, e.Status);
    }

    [Fact]
    public async Task ExtensionsAiOpenAiChatClient_AgainstTheServer_StreamsAndReportsUsage()
    {
        IChatClient client = Client().AsIChatClient();
        ChatResponse r = await client.GetResponseAsync([new(ChatRole.User, "Say something")],
            new ChatOptions { MaxOutputTokens = 5, Temperature = 0 });
        Assert.Equal(Microsoft.Extensions.AI.ChatFinishReason.Length, r.FinishReason);
        Assert.Equal(5, r.Usage?.OutputTokenCount);
        var text = new System.Text.StringBuilder();
        await foreach (ChatResponseUpdate u in client.GetStreamingResponseAsync([new(ChatRole.User, "Say something")],
                           new ChatOptions { MaxOutputTokens = 5, Temperature = 0 }))
            text.Append(u.Text);
        Assert.Equal(r.Text, text.ToString());
    }

    [Fact]
    public async Task EightConcurrentGreedyRequests_EqualTheSameEightSentOneAtATime()
    {
        string[] prompts = ["Hello!", "What is 2+2?", "Write a poem", "Translate 'cat' to French", "Why is the sky blue?", "List primes", "你好", "Tell a joke"];
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 12, Temperature = 0 };
        async Task<string> Ask(string p) => string.Concat((await Client().CompleteChatAsync([new UserChatMessage(p)], options)).Value.Content.Select(c => c.Text));
        var sequential = new List<string>();
        foreach (string p in prompts) sequential.Add(await Ask(p));
        string[] concurrent = await Task.WhenAll(prompts.Select(p => Task.Run(() => Ask(p))));
        Assert.Equal(sequential, concurrent);
    }
}
