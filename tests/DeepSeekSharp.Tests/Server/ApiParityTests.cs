using System.ClientModel;
using System.Net.Http.Json;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Model;
using DeepSeekSharp.Text;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;

namespace DeepSeekSharp.Tests.Server;

/// <summary>Thinking controls and JSON output on an R1-template model whose random weights never end their reasoning
/// on their own: a budget ends it for them, the answer follows, tags never reach the content.</summary>
public class ThinkingControlTests(R1Fixture f) : IClassFixture<R1Fixture>
{
    private static readonly object[] User = [new { role = "user", content = "Think about it" }];
    private static readonly Dictionary<string, float> NoEos = new() { ["1"] = -100 }; // random weights: keep the answer going

    private static async Task<JsonElement> Post(HttpClient http, object body)
    {
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/chat/completions", body);
        string text = await r.Content.ReadAsStringAsync();
        Assert.True(r.IsSuccessStatusCode, text);
        return JsonDocument.Parse(text).RootElement;
    }

    [Theory]
    [InlineData(4)]
    [InlineData(9)]
    [InlineData(25)]
    public async Task Reasoning_budget_bounds_the_reasoning_and_the_answer_follows(int budget)
    {
        using var http = new HttpClient { BaseAddress = f.Server.Address };
        JsonElement body = await Post(http, new { messages = User, max_tokens = budget + 12, temperature = 0, reasoning_budget = budget, logit_bias = NoEos });
        JsonElement message = body.GetProperty("choices")[0].GetProperty("message");
        int reasoning = body.GetProperty("usage").GetProperty("completion_tokens_details").GetProperty("reasoning_tokens").GetInt32();
        Assert.InRange(reasoning, 1, budget);
        string content = message.GetProperty("content").GetString()!;
        Assert.NotEqual("", content);
        Assert.DoesNotContain("think>", content);
        string reasoningText = message.GetProperty("reasoning_content").GetString() ?? ""; // null when only the tags were written
        Assert.DoesNotContain("think>", reasoningText);
        Assert.Equal(budget + 12, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        // Streamed: the same split, no tag in any content delta.
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/chat/completions",
            new { messages = User, max_tokens = budget + 12, temperature = 0, reasoning_budget = budget, logit_bias = NoEos, stream = true });
        var streamedContent = new System.Text.StringBuilder();
        var streamedReasoning = new System.Text.StringBuilder();
        foreach (string e in (await r.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1])
        {
            JsonElement chunk = JsonDocument.Parse(e[6..]).RootElement;
            if (chunk.GetProperty("choices").GetArrayLength() == 0) continue;
            JsonElement delta = chunk.GetProperty("choices")[0].GetProperty("delta");
            if (delta.TryGetProperty("content", out JsonElement c)) { Assert.DoesNotContain("think>", c.GetString()!); streamedContent.Append(c.GetString()); }
            if (delta.TryGetProperty("reasoning_content", out JsonElement rc)) streamedReasoning.Append(rc.GetString());
        }
        Assert.Equal(content, streamedContent.ToString());
        Assert.Equal(reasoningText, streamedReasoning.ToString());
    }

    [Theory]
    [InlineData("""{"reasoning_budget": 0}""")]
    [InlineData("""{"reasoning_effort": "none"}""")]
    [InlineData("""{"chat_template_kwargs": {"thinking": false}}""")]
    [InlineData("""{"thinking": {"type": "disabled"}}""")]
    public async Task Thinking_off_answers_without_reasoning(string extra)
    {
        using var http = new HttpClient { BaseAddress = f.Server.Address };
        var body = JsonSerializer.SerializeToNode(new { messages = User, max_tokens = 6, temperature = 0, logit_bias = NoEos })!.AsObject();
        foreach (var (k, v) in JsonNode(extra)) body[k] = v!.DeepClone();
        JsonElement reply = await Post(http, body);
        JsonElement message = reply.GetProperty("choices")[0].GetProperty("message");
        Assert.Equal(0, reply.GetProperty("usage").GetProperty("completion_tokens_details").GetProperty("reasoning_tokens").GetInt32());
        Assert.Equal(JsonValueKind.Null, message.GetProperty("reasoning_content").ValueKind);
        Assert.NotEqual("", message.GetProperty("content").GetString());
    }

    private static System.Text.Json.Nodes.JsonObject JsonNode(string json) => System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();

    [Fact]
    public void Thinking_off_closes_R1s_reasoning_in_the_prompt_and_on_keeps_it_open()
    {
        JsonElement messages = JsonSerializer.SerializeToElement(User);
        string open = f.Engine.RenderChat(messages);
        Assert.EndsWith("<｜Assistant｜><think>\n", open);
        Assert.Equal(open + "</think>\n\n", f.Engine.RenderChat(messages, options: new ChatPromptOptions { Thinking = false }));
        Assert.Equal(open, f.Engine.RenderChat(messages, options: new ChatPromptOptions { Thinking = true }));
        Assert.False(f.Engine.ChatPrompt(messages, options: new ChatPromptOptions { Thinking = false }).StartsInReasoning);
    }

    [Fact]
    public async Task Json_mode_after_reasoning_gives_parseable_content()
    {
        using var http = new HttpClient { BaseAddress = f.Server.Address };
        for (int seed = 0; seed < 4; seed++)
        {
            JsonElement body = await Post(http, new
            {
                messages = User, max_tokens = 40, seed, reasoning_budget = 6, response_format = new { type = "json_object" },
            });
            JsonElement message = body.GetProperty("choices")[0].GetProperty("message");
            using JsonDocument doc = JsonDocument.Parse(message.GetProperty("content").GetString()!);
            Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
            Assert.InRange(body.GetProperty("usage").GetProperty("completion_tokens_details").GetProperty("reasoning_tokens").GetInt32(), 1, 6);
        }
    }

    [Fact]
    public async Task Chat_client_reasoning_effort_none_and_json_format_map_through()
    {
        IChatClient client = f.Engine.AsChatClient();
        ChatResponse r = await client.GetResponseAsync([new(ChatRole.User, "Why?")], new ChatOptions
        {
            MaxOutputTokens = 30, Temperature = 0, Reasoning = new ReasoningOptions { Effort = ReasoningEffort.None },
            ResponseFormat = Microsoft.Extensions.AI.ChatResponseFormat.Json,
        });
        Assert.Equal(0, r.Usage!.ReasoningTokenCount);
        using JsonDocument doc = JsonDocument.Parse(r.Text);
        Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
    }
}

/// <summary>JSON output, schemas and log-probabilities through the server on the V3 template, by raw HTTP and by the
/// official OpenAI .NET client.</summary>
public class JsonAndLogprobTests(ServerFixture f) : IClassFixture<ServerFixture>
{
    private ChatClient Client() => new(f.ModelId, new ApiKeyCredential(ServerFixture.ApiKey),
        new OpenAIClientOptions { Endpoint = new Uri(f.BaseAddress, "/v1") });

    private const string Schema = """
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "days": {"type": "integer", "minimum": 0},
     "kind": {"enum": ["rain", "sun"]}}, "required": ["city", "days", "kind"], "additionalProperties": false}
    """;

    [Fact]
    public async Task OpenAi_client_json_schema_replies_validate_streamed_and_not()
    {
        var options = new ChatCompletionOptions
        {
#pragma warning disable OPENAI001 // Seed: evaluation-only in the client; our server honours it
            MaxOutputTokenCount = 40, Temperature = 1, Seed = 3,
#pragma warning restore OPENAI001
            ResponseFormat = OpenAI.Chat.ChatResponseFormat.CreateJsonSchemaFormat("weather", BinaryData.FromString(Schema), jsonSchemaIsStrict: true),
        };
        ChatCompletion c = await Client().CompleteChatAsync([new UserChatMessage("Weather?")], options);
        string text = c.Content[0].Text;
        var schema = Json.Schema.JsonSchema.FromText(Schema);
        using (JsonDocument doc = JsonDocument.Parse(text)) Assert.True(schema.Evaluate(doc.RootElement).IsValid, text);
        var streamed = new System.Text.StringBuilder();
        await foreach (StreamingChatCompletionUpdate u in Client().CompleteChatStreamingAsync([new UserChatMessage("Weather?")], options))
            foreach (ChatMessageContentPart p in u.ContentUpdate) streamed.Append(p.Text);
        Assert.Equal(text, streamed.ToString()); // same seed, same reply
    }

    [Fact]
    public async Task OpenAi_client_json_mode_and_extensions_ai_json_format()
    {
        ChatCompletion c = await Client().CompleteChatAsync([new UserChatMessage("JSON please")], new ChatCompletionOptions
        {
            MaxOutputTokenCount = 24, Temperature = 0, ResponseFormat = OpenAI.Chat.ChatResponseFormat.CreateJsonObjectFormat(),
        });
        JsonDocument.Parse(c.Content[0].Text).Dispose();
        IChatClient client = Client().AsIChatClient();
        ChatResponse r = await client.GetResponseAsync([new(ChatRole.User, "JSON please")], new ChatOptions
        {
            MaxOutputTokens = 24, Temperature = 0, ResponseFormat = Microsoft.Extensions.AI.ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(Schema).RootElement, "weather"),
        });
        using JsonDocument doc = JsonDocument.Parse(r.Text);
        Assert.True(Json.Schema.JsonSchema.FromText(Schema).Evaluate(doc.RootElement).IsValid, r.Text);
    }

    /// <summary>The reported log-probability of the first token is log softmax of the model's own logits for the
    /// prompt, computed here in double precision from a separate session; the top alternatives are the likeliest
    /// tokens in order; the tokens spell the content.</summary>
    [Fact]
    public async Task Logprobs_are_the_models_log_softmax_and_spell_the_content()
    {
        ChatCompletion c = await Client().CompleteChatAsync([new UserChatMessage("Hello!")], new ChatCompletionOptions
        {
            MaxOutputTokenCount = 6, Temperature = 0, IncludeLogProbabilities = true, TopLogProbabilityCount = 3,
        });
        IReadOnlyList<ChatTokenLogProbabilityDetails> tokens = c.ContentTokenLogProbabilities;
        Assert.Equal(6, tokens.Count);
        IEnumerable<ChatTokenLogProbabilityDetails> shown = tokens.Where(t => !(t.Token.StartsWith("<｜") && t.Token.EndsWith("｜>"))); // special tokens: not in the content
        Assert.Equal(c.Content[0].Text, System.Text.Encoding.UTF8.GetString(shown.SelectMany(t => t.Utf8Bytes!.Value.ToArray()).ToArray()));
        foreach (ChatTokenLogProbabilityDetails t in tokens)
        {
            Assert.Equal(3, t.TopLogProbabilities.Count);
            Assert.True(t.TopLogProbabilities[0].LogProbability >= t.TopLogProbabilities[1].LogProbability);
            Assert.Equal(t.TopLogProbabilities[0].LogProbability, t.LogProbability); // greedy took the likeliest
        }

        PromptTokens prompt = f.Engine.ChatPrompt(JsonSerializer.SerializeToElement(new[] { new { role = "user", content = "Hello!" } }));
        DeepSeekModel model = DeepSeekModel.Load(RandomModel.V3Tiny);
        using var session = model.CreateSession(64);
        var logits = new float[model.Config.VocabSize];
        session.Forward(prompt.Ids, logits, allPositions: false);
        double max = logits.Max(), sum = logits.Sum(l => Math.Exp(l - max));
        int first = Enumerable.Range(0, logits.Length).MaxBy(i => logits[i]);
        Assert.Equal(logits[first] - max - Math.Log(sum), tokens[0].LogProbability, 1e-4);
    }

    [Fact]
    public async Task Streamed_logprobs_cover_every_content_token()
    {
        var tokens = new List<ChatTokenLogProbabilityDetails>();
        var text = new System.Text.StringBuilder();
        await foreach (StreamingChatCompletionUpdate u in Client().CompleteChatStreamingAsync([new UserChatMessage("Hi")],
            new ChatCompletionOptions { MaxOutputTokenCount = 7, Temperature = 0, IncludeLogProbabilities = true, TopLogProbabilityCount = 2 }))
        {
            tokens.AddRange(u.ContentTokenLogProbabilities);
            foreach (ChatMessageContentPart p in u.ContentUpdate) text.Append(p.Text);
        }
        Assert.Equal(7, tokens.Count); // every generated token, special ones included ...
        IEnumerable<ChatTokenLogProbabilityDetails> shown = tokens.Where(t => !(t.Token.StartsWith("<｜") && t.Token.EndsWith("｜>"))); // ... which the content leaves out
        Assert.Equal(text.ToString(), System.Text.Encoding.UTF8.GetString(shown.SelectMany(t => t.Utf8Bytes!.Value.ToArray()).ToArray()));
    }

    [Fact]
    public async Task Completions_logprobs_use_the_legacy_shape()
    {
        using HttpClient http = f.Http();
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/completions", new { prompt = "Once upon", max_tokens = 5, temperature = 0, logprobs = 2 });
        JsonElement lp = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("logprobs");
        Assert.Equal(5, lp.GetProperty("tokens").GetArrayLength());
        Assert.Equal(5, lp.GetProperty("token_logprobs").GetArrayLength());
        Assert.Equal(5, lp.GetProperty("text_offset").GetArrayLength());
        Assert.All(lp.GetProperty("top_logprobs").EnumerateArray(), t => Assert.InRange(t.EnumerateObject().Count(), 1, 2));
    }

    [Theory]
    [InlineData("""{"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}}}}""", "response_format.json_schema.schema")]
    [InlineData("""{"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}""", "response_format.json_schema.schema")]
    [InlineData("""{"response_format": {"type": "xml"}}""", "response_format.type")]
    [InlineData("""{"top_logprobs": 3}""", "top_logprobs")]
    [InlineData("""{"logprobs": true, "top_logprobs": 21}""", "top_logprobs")]
    [InlineData("""{"reasoning_effort": "enormous"}""", "reasoning_effort")]
    [InlineData("""{"reasoning_budget": -1}""", "reasoning_budget")]
    [InlineData("""{"chat_template_kwargs": {"thinking": "yes"}}""", "chat_template_kwargs.thinking")]
    [InlineData("""{"chat_template_kwargs": {"messages": []}}""", "chat_template_kwargs.messages")]
    [InlineData("""{"thinking": {"type": "maybe"}}""", "thinking")]
    public async Task Bad_parity_parameters_get_400_naming_the_field(string extra, string param)
    {
        using HttpClient http = f.Http();
        var body = System.Text.Json.Nodes.JsonNode.Parse(extra)!.AsObject();
        body["messages"] = System.Text.Json.Nodes.JsonNode.Parse("""[{"role": "user", "content": "hi"}]""");
        body["max_tokens"] = 2;
        HttpResponseMessage r = await http.PostAsync("/v1/chat/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        string text = await r.Content.ReadAsStringAsync();
        Assert.Equal(400, (int)r.StatusCode);
        Assert.Equal(param, JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("param").GetString());
        // ... and the server keeps serving.
        HttpResponseMessage ok = await http.PostAsJsonAsync("/v1/chat/completions", new { messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 2 });
        Assert.Equal(200, (int)ok.StatusCode);
    }
}

/// <summary>Fill in the middle through /v1/completions' <c>suffix</c>, and chat prefix completion.</summary>
public class FimAndPrefixTests(ServerFixture f) : IClassFixture<ServerFixture>
{
    [Fact]
    public async Task Completions_with_a_suffix_use_the_fim_tokens()
    {
        using HttpClient http = f.Http();
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/completions", new { prompt = "def area(r):", suffix = "    return a\n", max_tokens = 3, temperature = 0 });
        string text = await r.Content.ReadAsStringAsync();
        Assert.True(r.IsSuccessStatusCode, text);
        Tokenizer t = f.Engine.Tokenizer;
        int expected = 1 + 3 + t.Encode("def area(r):", addBos: false).Length + t.Encode("    return a\n", addBos: false).Length; // BOS, three FIM tokens
        Assert.Equal(expected, JsonDocument.Parse(text).RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        int[] ids = f.Engine.FimPrompt("def area(r):", "    return a\n").Ids;
        Assert.Equal([0, 128801], ids[..2]);            // BOS <｜fim▁begin｜>
        Assert.Contains(128800, ids);                    // <｜fim▁hole｜>
        Assert.Equal(128802, ids[^1]);                   // <｜fim▁end｜>
    }

    [Fact]
    public void Fim_on_a_tokenizer_without_fim_tokens_is_refused()
    {
        string r1 = Path.Combine(AppContext.BaseDirectory, "assets", "models", "r1-tiny");
        using var g = new Generator(DeepSeekModel.Load(r1), Tokenizer.Load(r1), 64);
        var e = Assert.Throws<NotSupportedException>(() => g.FimPrompt("a", "b"));
        Assert.Contains("<｜fim▁begin｜>", e.Message);
    }

    [Fact]
    public async Task A_last_assistant_message_with_prefix_is_continued()
    {
        var messages = JsonSerializer.SerializeToElement(new object[]
        {
            new { role = "user", content = "Count to three." },
            new { role = "assistant", content = "One, two,", prefix = true },
        });
        string prompt = f.Engine.RenderChat(messages);
        Assert.EndsWith("<｜User｜>Count to three.<｜Assistant｜>One, two,", prompt);
        using HttpClient http = f.Http();
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/chat/completions", new { messages, max_tokens = 2, temperature = 0 });
        string text = await r.Content.ReadAsStringAsync();
        Assert.True(r.IsSuccessStatusCode, text);
        Assert.Equal(f.Engine.Tokenizer.Encode(prompt, addBos: false).Length,
            JsonDocument.Parse(text).RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }

    [Fact]
    public async Task Prefix_on_any_other_message_is_400()
    {
        using HttpClient http = f.Http();
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/chat/completions", new
        {
            messages = new object[] { new { role = "assistant", content = "Hi", prefix = true }, new { role = "user", content = "x" } }, max_tokens = 2,
        });
        Assert.Equal(400, (int)r.StatusCode);
        Assert.Equal("messages[0].prefix", JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("param").GetString());
    }
}

public class R1PrefixTests(R1Fixture f) : IClassFixture<R1Fixture>
{
    [Fact]
    public void R1_prefix_continues_the_answer_or_the_reasoning()
    {
        string Render(object last) => f.Engine.RenderChat(JsonSerializer.SerializeToElement(new[] { new { role = "user", content = "Hi" }, last }));
        Assert.EndsWith("<｜Assistant｜><think>\n</think>\n\nHello", Render(new { role = "assistant", content = "Hello", prefix = true }));
        Assert.EndsWith("<｜Assistant｜><think>\nLet me see", Render(new { role = "assistant", content = "", reasoning_content = "Let me see", prefix = true }));
        Assert.EndsWith("<｜Assistant｜><think>\nHmm.\n</think>\n\nYes", Render(new { role = "assistant", content = "Yes", reasoning_content = "Hmm.", prefix = true }));
        Assert.True(f.Engine.ChatPrompt(JsonSerializer.SerializeToElement(new object[] { new { role = "user", content = "Hi" },
            new { role = "assistant", content = "", reasoning_content = "So", prefix = true } })).StartsInReasoning);
    }
}
