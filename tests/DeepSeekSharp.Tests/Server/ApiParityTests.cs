using System.ClientModel;
using System.Net.Http.Json;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Model;
using DeepSeekSharp.Server;
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

    /// <summary>R1's first published template ended the prompt at <c>&lt;｜Assistant｜&gt;</c>; the reasoning is opened
    /// for the model by default (thinking off still closes it).</summary>
    [Fact]
    public void An_R1_template_that_leaves_the_reply_open_gets_think_by_default()
    {
        string source = File.ReadAllText(DeepSeekSharp.Tests.Text.ChatTemplateTests.R1TemplatePath).Replace(@"'<｜Assistant｜><think>\n'", "'<｜Assistant｜>'"); // the template writes "\n" as a Jinja escape
        Assert.DoesNotContain(@"<think>\n'", source);
        using var dir = new TempDir();
        File.Copy(Path.Combine(RandomModel.V3Tiny, "tokenizer.json"), dir.File("tokenizer.json"));
        File.WriteAllText(dir.File("tokenizer_config.json"), JsonSerializer.Serialize(new { add_bos_token = true, bos_token = "<｜begin▁of▁sentence｜>", eos_token = "<｜end▁of▁sentence｜>", chat_template = source }));
        using var g = new Generator(DeepSeekModel.Load(RandomModel.V3Tiny), Tokenizer.Load(dir.Path), 64);
        JsonElement messages = JsonSerializer.SerializeToElement(User);
        Assert.EndsWith("<｜Assistant｜><think>\n", g.RenderChat(messages));
        Assert.True(g.ChatPrompt(messages).StartsInReasoning);
        Assert.EndsWith("<｜Assistant｜><think>\n</think>\n\n", g.RenderChat(messages, options: new ChatPromptOptions { Thinking = false }));
        Assert.EndsWith("<｜User｜>Think about it", g.RenderChat(messages, addGenerationPrompt: false)); // no generation prompt, nothing added
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
    public async Task Forced_tool_calls_follow_the_reasoning()
    {
        using var http = new HttpClient { BaseAddress = f.Server.Address };
        JsonElement body = await Post(http, new { messages = User, tools = ToolServerTests.Tools, tool_choice = "required", reasoning_budget = 6, max_tokens = 120, seed = 1 });
        JsonElement message = body.GetProperty("choices")[0].GetProperty("message");
        Assert.True("tool_calls" == body.GetProperty("choices")[0].GetProperty("finish_reason").GetString(), body.GetRawText());
        Assert.InRange(body.GetProperty("usage").GetProperty("completion_tokens_details").GetProperty("reasoning_tokens").GetInt32(), 1, 6);
        foreach (JsonElement call in message.GetProperty("tool_calls").EnumerateArray()) ToolServerTests.AssertValidCall(call);
        Assert.DoesNotContain("tool", message.GetProperty("reasoning_content").GetString() ?? "");
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
    public async Task Extensions_ai_openai_client_streams_with_logprobs()
    {
        IChatClient client = Client().AsIChatClient();
        int tokens = 0;
        var text = new System.Text.StringBuilder();
        await foreach (ChatResponseUpdate u in client.GetStreamingResponseAsync([new(ChatRole.User, "Hi")], new ChatOptions
        {
            MaxOutputTokens = 5, Temperature = 0,
            RawRepresentationFactory = _ => new ChatCompletionOptions { IncludeLogProbabilities = true, TopLogProbabilityCount = 2 },
        }))
        {
            text.Append(u.Text);
            if (u.RawRepresentation is StreamingChatCompletionUpdate raw) tokens += raw.ContentTokenLogProbabilities.Count;
        }
        Assert.Equal(5, tokens);
        Assert.NotEqual("", text.ToString());
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

    /// <summary>Posts a one-message chat request with <paramref name="extra"/> fields; it must be a 400 naming <paramref name="param"/>.</summary>
    internal static async Task AssertBadRequest(HttpClient http, string extra, string param)
    {
        var body = System.Text.Json.Nodes.JsonNode.Parse(extra)!.AsObject();
        body["messages"] = System.Text.Json.Nodes.JsonNode.Parse("""[{"role": "user", "content": "hi"}]""");
        body["max_tokens"] = 2;
        HttpResponseMessage r = await http.PostAsync("/v1/chat/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        string text = await r.Content.ReadAsStringAsync();
        Assert.Equal(400, (int)r.StatusCode);
        Assert.Equal(param, JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("param").GetString());
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
        await AssertBadRequest(http, extra, param);
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
    public async Task Fim_on_a_server_whose_tokenizer_has_no_fim_tokens_is_400_and_it_keeps_serving()
    {
        string r1 = Path.Combine(AppContext.BaseDirectory, "assets", "models", "r1-tiny"); // its tokenizer has no FIM tokens
        using var engine = new BatchScheduler(DeepSeekModel.Load(r1), Tokenizer.Load(r1), new BatchOptions { MaxBatch = 1, ContextLength = 64 });
        await using var server = new DeepSeekServer(engine, new ServerOptions { Port = 0 });
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = server.Address };
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/completions", new { prompt = "a", suffix = "b", max_tokens = 2 });
        JsonElement error = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal(400, (int)r.StatusCode);
        Assert.Equal("suffix", error.GetProperty("param").GetString());
        Assert.Contains("<｜fim▁begin｜>", error.GetProperty("message").GetString());
        Assert.Equal(200, (int)(await http.PostAsJsonAsync("/v1/completions", new { prompt = "a", max_tokens = 2 })).StatusCode);
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

/// <summary>A model whose tokenizer carries DeepSeek-V3.1's chat template (tool calls as NAME&lt;｜tool▁sep｜&gt;ARGS,
/// thinking switched by the template's <c>thinking</c> flag).</summary>
public sealed class V31Fixture() : TemplateFixture(DeepSeekSharp.Tests.Inference.ToolCallTests.V31TemplatePath, "v31-random");

/// <summary>Tool calling through the server: forced calls are well-formed calls of the offered tools with arguments
/// their schemas accept, in both DeepSeek formats, streamed or not; the official OpenAI client and
/// Microsoft.Extensions.AI's function invocation run a tool end to end; bad tool input is a 400 naming the field.</summary>
public class ToolServerTests(ServerFixture f) : IClassFixture<ServerFixture>
{
    internal const string WeatherSchema = """
        {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 0}},
         "required": ["city", "unit"], "additionalProperties": false}
        """;

    internal static object[] Tools =>
    [
        new { type = "function", function = new { name = "get_weather", description = "Weather for a city", parameters = JsonDocument.Parse(WeatherSchema).RootElement } },
        new { type = "function", function = new { name = "add", description = "Adds", parameters = JsonDocument.Parse("""{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}""").RootElement } },
    ];

    internal static async Task<JsonElement> Post(HttpClient http, object body)
    {
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/chat/completions", body);
        string text = await r.Content.ReadAsStringAsync();
        Assert.True(r.IsSuccessStatusCode, text);
        return JsonDocument.Parse(text).RootElement;
    }

    internal static void AssertValidCall(JsonElement call)
    {
        Assert.StartsWith("call_", call.GetProperty("id").GetString());
        Assert.Equal("function", call.GetProperty("type").GetString());
        string name = call.GetProperty("function").GetProperty("name").GetString()!;
        using JsonDocument args = JsonDocument.Parse(call.GetProperty("function").GetProperty("arguments").GetString()!);
        string schema = name == "get_weather" ? WeatherSchema : """{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}""";
        Assert.True(Json.Schema.JsonSchema.FromText(schema).Evaluate(args.RootElement).IsValid, args.RootElement.GetRawText());
    }

    internal static async Task<List<(string Id, string Name, string Arguments)>> StreamCalls(HttpClient http, object body)
    {
        HttpResponseMessage r = await http.PostAsJsonAsync("/v1/chat/completions", body);
        var calls = new List<(string Id, string Name, System.Text.StringBuilder Args)>();
        string? finish = null;
        foreach (string e in (await r.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1])
        {
            JsonElement choices = JsonDocument.Parse(e[6..]).RootElement.GetProperty("choices");
            if (choices.GetArrayLength() == 0) continue;
            JsonElement delta = choices[0].GetProperty("delta");
            if (choices[0].GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = choices[0].GetProperty("finish_reason").GetString();
            if (delta.TryGetProperty("content", out JsonElement c)) Assert.DoesNotContain("tool", c.GetString()!);
            if (!delta.TryGetProperty("tool_calls", out JsonElement tc)) continue;
            JsonElement d = tc[0];
            if (d.TryGetProperty("id", out JsonElement id))
            {
                Assert.Equal(calls.Count, d.GetProperty("index").GetInt32());
                calls.Add((id.GetString()!, d.GetProperty("function").GetProperty("name").GetString()!, new()));
            }
            calls[d.GetProperty("index").GetInt32()].Args.Append(d.GetProperty("function").GetProperty("arguments").GetString());
        }
        Assert.Equal("tool_calls", finish);
        return calls.Select(c => (c.Id, c.Name, c.Args.ToString())).ToList();
    }

    [Theory]
    [InlineData("required", true)]
    [InlineData("required", false)]
    [InlineData("add", true)]
    public async Task Forced_calls_are_well_formed_streamed_or_not(string choice, bool parallel)
    {
        using HttpClient http = f.Http();
        object toolChoice = choice == "required" ? "required" : new { type = "function", function = new { name = choice } };
        for (int seed = 0; seed < 3; seed++)
        {
            object body = new { messages = new[] { new { role = "user", content = "Weather in Oslo?" } }, tools = Tools, tool_choice = toolChoice,
                parallel_tool_calls = parallel, max_tokens = 160, seed, temperature = 1 };
            JsonElement reply = await Post(http, body);
            JsonElement choice0 = reply.GetProperty("choices")[0];
            Assert.Equal("tool_calls", choice0.GetProperty("finish_reason").GetString());
            JsonElement message = choice0.GetProperty("message");
            Assert.Equal(JsonValueKind.Null, message.GetProperty("content").ValueKind);
            JsonElement calls = message.GetProperty("tool_calls");
            Assert.InRange(calls.GetArrayLength(), 1, parallel && choice == "required" ? 20 : 1);
            foreach (JsonElement call in calls.EnumerateArray())
            {
                AssertValidCall(call);
                if (choice != "required") Assert.Equal(choice, call.GetProperty("function").GetProperty("name").GetString());
            }
            var streamed = await StreamCalls(http, new { messages = new[] { new { role = "user", content = "Weather in Oslo?" } }, tools = Tools,
                tool_choice = toolChoice, parallel_tool_calls = parallel, max_tokens = 160, seed, temperature = 1, stream = true });
            Assert.Equal(calls.EnumerateArray().Select(c => c.GetProperty("function").GetProperty("name").GetString()), streamed.Select(c => c.Name));
            Assert.Equal(calls.EnumerateArray().Select(c => c.GetProperty("function").GetProperty("arguments").GetString()), streamed.Select(c => c.Arguments));
        }
    }

    [Fact]
    public async Task Openai_client_round_trips_a_tool_call_and_its_result()
    {
        var client = new ChatClient(f.ModelId, new ApiKeyCredential(ServerFixture.ApiKey), new OpenAIClientOptions { Endpoint = new Uri(f.BaseAddress, "/v1") });
        ChatTool add = ChatTool.CreateFunctionTool("add", "Adds", BinaryData.FromString("""{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}"""));
        var options = new ChatCompletionOptions { Tools = { add }, ToolChoice = ChatToolChoice.CreateRequiredChoice(), MaxOutputTokenCount = 80, Temperature = 0 };
        List<OpenAI.Chat.ChatMessage> messages = [new UserChatMessage("What is 2 + 3?")];
        ChatCompletion first = await client.CompleteChatAsync(messages, options);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.ToolCalls, first.FinishReason);
        ChatToolCall call = Assert.Single(first.ToolCalls);
        Assert.Equal("add", call.FunctionName);
        using JsonDocument args = JsonDocument.Parse(call.FunctionArguments);
        Assert.Equal(JsonValueKind.Number, args.RootElement.GetProperty("a").ValueKind);
        messages.Add(new AssistantChatMessage(first));
        messages.Add(new ToolChatMessage(call.Id, "5"));
        ChatCompletion second = await client.CompleteChatAsync(messages, new ChatCompletionOptions { Tools = { add }, MaxOutputTokenCount = 4, Temperature = 0 });
        Assert.True(second.Usage.InputTokenCount > first.Usage.InputTokenCount); // the call and its result were rendered into the prompt
    }

    [Theory]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "has space"}}]}""", "tools[0].function.name")]
    [InlineData("""{"tools": [{"type": "retrieval"}]}""", "tools[0].type")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}""", "tools[0].function.parameters")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]}""", "tools[1].function.name")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}""", "tool_choice")]
    [InlineData("""{"tool_choice": "required"}""", "tool_choice")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "always"}""", "tool_choice")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "g", "parameters": {"type": "object", "properties": {"s": {"type": "string", "pattern": "x"}}}}}], "tool_choice": "required"}""", "tools[1].function.parameters")]
    public async Task Bad_tool_input_is_400_naming_the_field(string extra, string param)
    {
        using HttpClient http = f.Http();
        await JsonAndLogprobTests.AssertBadRequest(http, extra, param);
    }

    [Fact]
    public void Tools_are_described_in_the_prompt_of_a_template_that_does_not_render_them()
    {
        var tools = new[] { new DeepSeekSharp.Inference.Tools.ToolDefinition("add", "Adds two integers", JsonDocument.Parse("""{"type": "object"}""").RootElement) };
        string prompt = f.Engine.RenderChat(JsonSerializer.SerializeToElement(new[] { new { role = "system", content = "Be brief." }, new { role = "user", content = "2+3?" } }),
            options: new ChatPromptOptions { Tools = tools });
        Assert.StartsWith("<｜begin▁of▁sentence｜>Be brief.\n\n## Tools\nYou have access to the following tools:\n\n### add\nDescription: Adds two integers\n\nParameters: {\"type\": \"object\"}\n", prompt);
        Assert.Contains("<｜tool▁call▁begin｜>function<｜tool▁sep｜>tool_call_name\n```json\n", prompt); // the V3 call format
        Assert.EndsWith("<｜User｜>2+3?<｜Assistant｜>", prompt);
    }

    /// <summary>Microsoft.Extensions.AI's function-invoking middleware over our IChatClient and over its OpenAI
    /// client against our server: the model is made to call <c>add</c>, the middleware runs it and sends the result
    /// back, the model answers.</summary>
    [Theory]
    [InlineData("engine")]
    [InlineData("http")]
    public async Task Function_invoking_chat_client_runs_a_tool_end_to_end(string via)
    {
        int invoked = 0;
        AIFunction add = AIFunctionFactory.Create((long a, long b) => { invoked++; return a + b; }, "add", "Adds two integers"); // random weights write long numbers
        IChatClient inner = via == "engine" ? f.Engine.AsChatClient()
            : new ChatClient(f.ModelId, new ApiKeyCredential(ServerFixture.ApiKey), new OpenAIClientOptions { Endpoint = new Uri(f.BaseAddress, "/v1") }).AsIChatClient();
        using IChatClient client = new ChatClientBuilder(inner).UseFunctionInvocation(configure: c => c.MaximumIterationsPerRequest = 2).Build();
        ChatResponse r = await client.GetResponseAsync([new(ChatRole.User, "What is 2 + 3?")], new ChatOptions
        {
            Tools = [add], ToolMode = ChatToolMode.RequireSpecific("add"), MaxOutputTokens = 60, Temperature = 0,
        });
        Assert.True(invoked >= 1);
        FunctionCallContent call = r.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().First();
        Assert.Equal("add", call.Name);
        Assert.Null(call.Exception);
        FunctionResultContent result = r.Messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().First();
        Assert.Equal(call.CallId, result.CallId);
        Assert.Equal(long.Parse(call.Arguments!["a"]!.ToString()!) + long.Parse(call.Arguments!["b"]!.ToString()!), long.Parse(result.Result!.ToString()!));
    }
}

public class V31ToolTests(V31Fixture f) : IClassFixture<V31Fixture>
{
    [Fact]
    public async Task Forced_calls_in_the_v31_format_are_well_formed()
    {
        using var http = new HttpClient { BaseAddress = f.Server.Address };
        for (int seed = 0; seed < 3; seed++)
        {
            object body = new { messages = new[] { new { role = "user", content = "Add 2 and 3" } }, tools = ToolServerTests.Tools, tool_choice = "required", max_tokens = 120, seed };
            JsonElement message = (await ToolServerTests.Post(http, body)).GetProperty("choices")[0].GetProperty("message");
            foreach (JsonElement call in message.GetProperty("tool_calls").EnumerateArray()) ToolServerTests.AssertValidCall(call);
            var streamed = await ToolServerTests.StreamCalls(http, new { messages = new[] { new { role = "user", content = "Add 2 and 3" } }, tools = ToolServerTests.Tools,
                tool_choice = "required", max_tokens = 120, seed, stream = true });
            Assert.Equal(message.GetProperty("tool_calls").EnumerateArray().Select(c => c.GetProperty("function").GetProperty("arguments").GetString()), streamed.Select(c => c.Arguments));
        }
    }

    [Fact]
    public void Thinking_off_and_on_render_the_templates_own_prompts()
    {
        JsonElement messages = JsonSerializer.SerializeToElement(new[] { new { role = "user", content = "Hi" } });
        Assert.EndsWith("<｜User｜>Hi<｜Assistant｜></think>", f.Engine.RenderChat(messages, options: new ChatPromptOptions { Thinking = false }));
        Assert.EndsWith("<｜User｜>Hi<｜Assistant｜><think>", f.Engine.RenderChat(messages, options: new ChatPromptOptions { Thinking = true }));
        Assert.True(f.Engine.ChatPrompt(messages, options: new ChatPromptOptions { Thinking = true }).StartsInReasoning);
        Assert.False(f.Engine.ChatPrompt(messages, options: new ChatPromptOptions { Thinking = false }).StartsInReasoning);
    }
}
