using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace DeepSeekSharp.Server;

/// <summary>The OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health,
/// /metrics, all driving one <see cref="BatchScheduler"/>. <see cref="ShutdownAsync"/> drains it: new requests get
/// 503, running ones finish or are ended with a stated reason after <see cref="ServerOptions.ShutdownTimeout"/>.</summary>
public sealed class DeepSeekServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly BatchScheduler _engine;
    private readonly ServerMetrics _metrics;
    private readonly string _modelId;
    private readonly byte[]? _apiKeyHash;   // SHA-256 of the key: compared in constant time, whatever the lengths
    private readonly string[] _corsOrigins;
    private readonly TimeSpan _shutdownTimeout;
    private readonly RequestDefaults _defaults;
    private readonly ILogger _log;

    public DeepSeekServer(BatchScheduler engine, ServerOptions options)
    {
        options.Validate();
        _engine = engine;
        _modelId = options.ModelId ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(engine.Model.Path));
        _apiKeyHash = options.ApiKey is { } key ? SHA256.HashData(Encoding.UTF8.GetBytes(key)) : null;
        _corsOrigins = options.CorsOrigins.Select(o => o.TrimEnd('/')).ToArray();
        _shutdownTimeout = options.ShutdownTimeout;
        _defaults = new RequestDefaults { Speculation = options.Speculation, ReasoningBudget = options.ReasoningBudget, Thinking = options.Thinking };
        _metrics = new ServerMetrics(engine);
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls($"http://{options.Host}:{options.Port}");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        // The host's default console lifetime would take SIGINT/SIGTERM for itself (and swallow a second one); the
        // owner of the server decides when it stops and calls ShutdownAsync (dss serve: on a signal).
        builder.Services.AddSingleton<Microsoft.Extensions.Hosting.IHostLifetime, OwnerLifetime>();
        _app = builder.Build();
        _log = _app.Logger;
        _app.Use(CheckOrigin);
        _app.Use(Authenticate);
        _app.MapPost("/v1/chat/completions", ctx => Handle(ctx, "chat", chat: true));
        _app.MapPost("/v1/completions", ctx => Handle(ctx, "completions", chat: false));
        _app.MapGet("/v1/models", ModelsAsync);
        _app.MapGet("/health", ctx => WriteJson(ctx, _engine.Draining ? 503 : 200, w =>
        {
            w.WriteString("status", _engine.Draining ? "draining" : "ok");
            w.WriteString("model", _modelId);
            w.WriteNumber("active_sequences", _engine.ActiveSequences);
            w.WriteNumber("queue_depth", _engine.QueueDepth);
        }));
        _app.MapMetrics("/metrics", _metrics.Registry);
    }

    private sealed class OwnerLifetime : Microsoft.Extensions.Hosting.IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    public string ModelId => _modelId;
    /// <summary>Whether /v1/* requires an API key.</summary>
    public bool RequiresApiKey => _apiKeyHash is not null;

    /// <summary>The address the server listens on (after <see cref="StartAsync"/>), e.g. http://127.0.0.1:51234.</summary>
    public Uri Address => new(_app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

    private bool _started;

    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        await _app.StartAsync(cancellationToken);
        _started = true;
    }

    /// <summary>Serves until <paramref name="cancellationToken"/> is cancelled, then drains (<see cref="ShutdownAsync"/>).</summary>
    public async Task RunAsync(CancellationToken cancellationToken = default)
    {
        if (!_started) await StartAsync(cancellationToken);
        try { await Task.Delay(Timeout.Infinite, cancellationToken); }
        catch (OperationCanceledException) { }
        await ShutdownAsync();
    }

    /// <summary>Stops taking requests (503 <c>server_shutting_down</c>; /health says <c>draining</c>), lets running
    /// and queued sequences finish for up to the shutdown timeout, ends the rest — a stream gets a final error
    /// event saying why, then <c>[DONE]</c> — and stops listening once every response is written. Returns how many
    /// sequences were cut off.</summary>
    public async Task<int> ShutdownAsync()
    {
        _engine.BeginDrain();
        int cut = 0;
        using (var timeout = new CancellationTokenSource(_shutdownTimeout))
        {
            try { await _engine.WhenIdleAsync(timeout.Token); }
            catch (OperationCanceledException)
            {
                cut = _engine.ActiveSequences + (int)_engine.QueueDepth;
                await _engine.AbortAllAsync(new EngineShutdownException(
                    $"the server is shutting down: this reply was cut off after {_shutdownTimeout.TotalSeconds:0.#} s of draining"));
            }
        }
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5)); // the cut-off responses write their last event
        await _app.StopAsync(stop.Token);
        return cut;
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();

    /// <summary>Browsers send <c>Origin</c>; any origin not allowed by <see cref="ServerOptions.CorsOrigins"/> is refused,
    /// so a web page cannot use a local server through its visitor's browser (a "simple" text/plain POST included).</summary>
    private async Task CheckOrigin(HttpContext ctx, Func<Task> next)
    {
        string? origin = ctx.Request.Headers.Origin;
        if (string.IsNullOrEmpty(origin)) { await next(); return; }
        bool allowed = _corsOrigins.Any(o => o == "*" || string.Equals(o, origin, StringComparison.OrdinalIgnoreCase));
        if (!allowed)
        {
            await WriteError(ctx, new ApiError(403, $"cross-origin requests from '{origin}' are refused; start the server with --cors {origin} to allow them",
                code: "origin_not_allowed"), "cors");
            return;
        }
        ctx.Response.Headers.AccessControlAllowOrigin = origin;
        ctx.Response.Headers.Vary = "Origin";
        if (HttpMethods.IsOptions(ctx.Request.Method))
        {
            ctx.Response.Headers.AccessControlAllowMethods = "GET, POST, OPTIONS";
            ctx.Response.Headers.AccessControlAllowHeaders = "Authorization, Content-Type";
            ctx.Response.Headers.AccessControlMaxAge = "600";
            ctx.Response.StatusCode = 204;
            return;
        }
        await next();
    }

    private async Task Authenticate(HttpContext ctx, Func<Task> next)
    {
        if (_apiKeyHash is not null && ctx.Request.Path.StartsWithSegments("/v1") && !KeyMatches(ctx.Request.Headers.Authorization.ToString()))
        {
            await WriteError(ctx, new ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'", code: "invalid_api_key"), "auth");
            return;
        }
        await next();
    }

    private bool KeyMatches(string authorization) =>
        authorization.StartsWith("Bearer ", StringComparison.Ordinal)
        && CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(authorization[7..])), _apiKeyHash);

    private Task ModelsAsync(HttpContext ctx) => WriteJson(ctx, 200, w =>
    {
        w.WriteString("object", "list");
        w.WriteStartArray("data");
        w.WriteStartObject();
        w.WriteString("id", _modelId);
        w.WriteString("object", "model");
        w.WriteNumber("created", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        w.WriteString("owned_by", "deepseeksharp");
        w.WriteNumber("max_model_len", _engine.ContextLength);
        w.WriteEndObject();
        w.WriteEndArray();
    });

    private async Task Handle(HttpContext ctx, string endpoint, bool chat)
    {
        try
        {
            if (_engine.Draining) throw ApiError.ShuttingDown("the server is shutting down");
            JsonElement body;
            try
            {
                using JsonDocument doc = await JsonDocument.ParseAsync(ctx.Request.Body, default, ctx.RequestAborted);
                body = doc.RootElement.Clone();
            }
            catch (JsonException e) { throw ApiError.BadRequest($"the request body is not valid JSON: {e.Message}"); }
            catch (DecoderFallbackException) { throw ApiError.BadRequest("the request body is not valid UTF-8"); }
            ChatRequest req = ChatRequest.Parse(body, chat, _modelId, _engine.Model.Config.VocabSize, _defaults);
            PromptTokens prompt;
            // Tokenising stops as soon as the prompt cannot fit, so an oversized prompt costs little time and no memory.
            try
            {
                prompt = chat
                    ? _engine.ChatPrompt(req.Messages, _engine.ContextLength - 1, ChatPromptOptions.For(req.PromptOptions, req.Options, _engine.Tokenizer))
                    : req.Suffix is { } suffix ? _engine.FimPrompt(req.Prompt!, suffix, _engine.ContextLength - 1)
                    : _engine.RawPrompt(req.Prompt!, _engine.ContextLength - 1);
            }
            catch (NotSupportedException e) { throw ApiError.BadRequest(e.Message, "suffix"); }
            catch (Text.Templates.TemplateException e) { throw ApiError.BadRequest(e.Message, "messages"); }
            catch (PromptTooLongException e)
            {
                throw ApiError.BadRequest($"the prompt has more than {e.Limit} tokens; this server's context holds {_engine.ContextLength} (prompt and reply)",
                    chat ? "messages" : "prompt", "context_length_exceeded");
            }
            IAsyncEnumerable<GenerationUpdate> stream = _engine.GenerateAsync(prompt, req.Options, ctx.RequestAborted);
            var reply = new Reply(chat, _modelId) { WantsLogprobs = req.Options.TopLogprobs is not null };
            bool whole = true;
            if (req.Stream) whole = await StreamAsync(ctx, stream, reply, req.IncludeUsage);
            else await CompleteAsync(ctx, stream, reply);
            _metrics.Requests.WithLabels(endpoint, whole ? "200" : "503").Inc();
        }
        catch (ApiError e) { await WriteError(ctx, e, endpoint); }
        catch (EngineBusyException e)
        {
            ctx.Response.Headers.RetryAfter = "1";
            await WriteError(ctx, new ApiError(503, e.Message, code: "server_overloaded", type: "server_error"), endpoint);
        }
        catch (EngineShutdownException e) { await WriteError(ctx, ApiError.ShuttingDown(e.Message), endpoint); }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            _metrics.Requests.WithLabels(endpoint, "499").Inc(); // client went away; its sequence was cancelled
        }
        catch (Exception e)
        {
            // Nothing unexpected leaves as an empty 500: it is logged, counted, and answered with an error body.
            _log.LogError(e, "{Endpoint} request failed", endpoint);
            await WriteError(ctx, new ApiError(500, $"internal error ({e.GetType().Name}); the server logged it", code: "internal_error", type: "server_error"), endpoint);
        }
    }

    /// <summary>Accumulates one reply for the non-streaming answer and shapes the JSON of both modes.</summary>
    private sealed class Reply(bool chat, string model)
    {
        public readonly string Id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
        public readonly long Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        public readonly bool Chat = chat;
        public readonly string Model = model;
        public readonly StringBuilder Content = new(), Reasoning = new();
        public readonly List<TokenLogprob> Logprobs = [];
        public readonly Inference.Tools.ToolCallCollector ToolCalls = new();
        public GenerationUsage? Usage;
        public bool WantsLogprobs;

        public string FinishReason => Usage?.FinishReason switch
        {
            Inference.FinishReason.Length => "length",
            Inference.FinishReason.ToolCalls => "tool_calls",
            _ => "stop",
        };

        public void Header(Utf8JsonWriter w, bool chunk)
        {
            w.WriteString("id", Id);
            w.WriteString("object", Chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
            w.WriteNumber("created", Created);
            w.WriteString("model", Model);
        }

        public void WriteUsage(Utf8JsonWriter w)
        {
            GenerationUsage u = Usage!;
            w.WriteStartObject("usage");
            w.WriteNumber("prompt_tokens", u.PromptTokens);
            w.WriteNumber("completion_tokens", u.CompletionTokens);
            w.WriteNumber("total_tokens", u.PromptTokens + u.CompletionTokens);
            w.WriteNumber("prompt_cache_hit_tokens", u.CachedPromptTokens);   // DeepSeek's names
            w.WriteNumber("prompt_cache_miss_tokens", u.PromptTokens - u.CachedPromptTokens);
            w.WriteStartObject("prompt_tokens_details");                      // OpenAI's
            w.WriteNumber("cached_tokens", u.CachedPromptTokens);
            w.WriteEndObject();
            w.WriteStartObject("completion_tokens_details");
            w.WriteNumber("reasoning_tokens", u.ReasoningTokens);
            w.WriteEndObject();
            w.WriteEndObject();
        }
    }

    private async Task CompleteAsync(HttpContext ctx, IAsyncEnumerable<GenerationUpdate> stream, Reply reply)
    {
        await foreach (GenerationUpdate u in stream)
        {
            if (u.Logprobs is { } lp) reply.Logprobs.AddRange(reply.Chat ? lp.Where(t => t.Part == ReplyPart.Answer) : lp);
            if (u.Usage is not null) reply.Usage = u.Usage;
            else if (u.ToolCall is { } call) reply.ToolCalls.Add(call);
            else (u.Part == ReplyPart.Reasoning ? reply.Reasoning : reply.Content).Append(u.Text);
        }
        Count(reply);
        await WriteJson(ctx, 200, w =>
        {
            reply.Header(w, chunk: false);
            w.WriteStartArray("choices");
            w.WriteStartObject();
            w.WriteNumber("index", 0);
            if (reply.Chat)
            {
                w.WriteStartObject("message");
                w.WriteString("role", "assistant");
                if (reply.ToolCalls.Count > 0 && reply.Content.Length == 0) w.WriteNull("content"); // as OpenAI
                else w.WriteString("content", reply.Content.ToString());
                if (reply.Reasoning.Length > 0) w.WriteString("reasoning_content", reply.Reasoning.ToString());
                else w.WriteNull("reasoning_content");
                if (reply.ToolCalls.Count > 0)
                {
                    w.WriteStartArray("tool_calls");
                    foreach (var (id, name, arguments) in reply.ToolCalls.Calls)
                    {
                        w.WriteStartObject();
                        w.WriteString("id", id);
                        w.WriteString("type", "function");
                        w.WriteStartObject("function");
                        w.WriteString("name", name);
                        w.WriteString("arguments", arguments);
                        w.WriteEndObject();
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                }
                w.WriteEndObject();
            }
            else w.WriteString("text", reply.Reasoning.ToString() + reply.Content);
            WriteLogprobs(w, reply, reply.Logprobs, 0);
            w.WriteString("finish_reason", reply.FinishReason);
            w.WriteEndObject();
            w.WriteEndArray();
            reply.WriteUsage(w);
        });
    }

    private void Count(Reply reply)
    {
        _metrics.CompletionTokens.Inc(reply.Usage!.CompletionTokens);
        _metrics.PromptTokens.Inc(reply.Usage.PromptTokens);
        _metrics.DraftTokens.Inc(reply.Usage.DraftTokens);
        _metrics.AcceptedDraftTokens.Inc(reply.Usage.AcceptedDraftTokens);
    }

    /// <summary>Server-sent events: the role, reasoning_content pieces, content pieces, the finish chunk, an optional
    /// usage chunk, then <c>data: [DONE]</c>. False when shutdown cut the reply off (an error event, then [DONE]).</summary>
    private async Task<bool> StreamAsync(HttpContext ctx, IAsyncEnumerable<GenerationUpdate> stream, Reply reply, bool includeUsage)
    {
        await using IAsyncEnumerator<GenerationUpdate> e = stream.GetAsyncEnumerator(ctx.RequestAborted);
        bool more = await e.MoveNextAsync(); // errors before the first token still become a JSON error response
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        if (reply.Chat) await Event(ctx, reply, w => Delta(w, reply, "role", "assistant", null));
        try
        {
            for (; more; more = await e.MoveNextAsync())
            {
                GenerationUpdate u = e.Current;
                List<TokenLogprob>? logprobs = reply.WantsLogprobs && u.Logprobs is { } lp
                    ? [.. reply.Chat ? lp.Where(t => t.Part == ReplyPart.Answer) : lp] : null;
                if (u.Usage is not null) reply.Usage = u.Usage;
                if (u.ToolCall is { } call)
                {
                    await Event(ctx, reply, w => ToolCallDelta(w, call, logprobs));
                    continue;
                }
                if (u.Text.Length == 0 && logprobs is not { Count: > 0 }) continue;
                string field = !reply.Chat ? "text" : u.Part == ReplyPart.Reasoning ? "reasoning_content" : "content";
                int offset = reply.Content.Length;
                if (!reply.Chat) reply.Content.Append(u.Text);
                await Event(ctx, reply, w => Delta(w, reply, field, u.Text, null, logprobs, offset));
            }
        }
        catch (EngineShutdownException x)
        {
            // Cut off by shutdown: an error event (as OpenAI sends mid-stream) says why, then the stream ends properly.
            await Event(ctx, null, w => ErrorObject(w, ApiError.ShuttingDown(x.Message)));
            await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted);
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
            return false;
        }
        Count(reply);
        await Event(ctx, reply, w => Delta(w, reply, null, null, reply.FinishReason));
        if (includeUsage)
            await Event(ctx, reply, w =>
            {
                w.WriteStartArray("choices");
                w.WriteEndArray();
                reply.WriteUsage(w);
            });
        await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted);
        await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
        return true;
    }

    /// <summary>OpenAI's streamed tool call: the first piece with index, id, type and name (arguments ""), later
    /// pieces with index and an arguments fragment.</summary>
    private static void ToolCallDelta(Utf8JsonWriter w, Inference.Tools.ToolCallDelta d, List<TokenLogprob>? logprobs)
    {
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("delta");
        w.WriteStartArray("tool_calls");
        w.WriteStartObject();
        w.WriteNumber("index", d.Index);
        if (d.Id is not null)
        {
            w.WriteString("id", d.Id);
            w.WriteString("type", "function");
        }
        w.WriteStartObject("function");
        if (d.Name is not null) w.WriteString("name", d.Name);
        w.WriteString("arguments", d.Arguments);
        w.WriteEndObject();
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteNull("logprobs");
        w.WriteNull("finish_reason");
        w.WriteEndObject();
        w.WriteEndArray();
    }

    private static void Delta(Utf8JsonWriter w, Reply reply, string? field, string? value, string? finish,
        List<TokenLogprob>? logprobs = null, int textOffset = 0)
    {
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        if (reply.Chat)
        {
            w.WriteStartObject("delta");
            if (field is not null) w.WriteString(field, value);
            w.WriteEndObject();
        }
        else w.WriteString("text", field is null ? "" : value);
        if (logprobs is null) w.WriteNull("logprobs");
        else WriteLogprobs(w, reply, logprobs, textOffset);
        if (finish is null) w.WriteNull("finish_reason");
        else w.WriteString("finish_reason", finish);
        w.WriteEndObject();
        w.WriteEndArray();
    }

    /// <summary>Chat: OpenAI's <c>{"content": [{token, logprob, bytes, top_logprobs}]}</c>. Completions: the legacy
    /// <c>{tokens, token_logprobs, top_logprobs, text_offset}</c>. Null when the request did not ask.</summary>
    private static void WriteLogprobs(Utf8JsonWriter w, Reply reply, List<TokenLogprob> tokens, int textOffset)
    {
        if (!reply.WantsLogprobs) { w.WriteNull("logprobs"); return; }
        w.WriteStartObject("logprobs");
        if (reply.Chat)
        {
            w.WriteStartArray("content");
            foreach (TokenLogprob t in tokens)
            {
                w.WriteStartObject();
                Token(w, t);
                w.WriteStartArray("top_logprobs");
                foreach (TokenLogprob alt in t.Top)
                {
                    w.WriteStartObject();
                    Token(w, alt);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        else
        {
            w.WriteStartArray("tokens");
            foreach (TokenLogprob t in tokens) w.WriteStringValue(t.Token);
            w.WriteEndArray();
            w.WriteStartArray("token_logprobs");
            foreach (TokenLogprob t in tokens) w.WriteNumberValue(t.Logprob);
            w.WriteEndArray();
            w.WriteStartArray("top_logprobs");
            foreach (TokenLogprob t in tokens)
            {
                w.WriteStartObject();
                var seen = new HashSet<string>(); // two tokens can print alike (halves of one character)
                foreach (TokenLogprob alt in t.Top)
                    if (seen.Add(alt.Token)) w.WriteNumber(alt.Token, alt.Logprob);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("text_offset");
            foreach (TokenLogprob t in tokens)
            {
                w.WriteNumberValue(textOffset);
                textOffset += t.Token.Length;
            }
            w.WriteEndArray();
        }
        w.WriteEndObject();

        static void Token(Utf8JsonWriter w, TokenLogprob t)
        {
            w.WriteString("token", t.Token);
            w.WriteNumber("logprob", t.Logprob);
            w.WriteStartArray("bytes");
            foreach (byte b in t.Bytes) w.WriteNumberValue(b);
            w.WriteEndArray();
        }
    }

    private static async Task Event(HttpContext ctx, Reply? reply, Action<Utf8JsonWriter> body)
    {
        var buffer = new MemoryStream();
        buffer.Write("data: "u8);
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            reply?.Header(w, chunk: true);
            body(w);
            w.WriteEndObject();
        }
        buffer.Write("\n\n"u8);
        await ctx.Response.Body.WriteAsync(buffer.GetBuffer().AsMemory(0, (int)buffer.Length), ctx.RequestAborted);
        await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
    }

    private static async Task WriteJson(HttpContext ctx, int status, Action<Utf8JsonWriter> body)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.Body.WriteAsync(buffer.GetBuffer().AsMemory(0, (int)buffer.Length));
    }

    private async Task WriteError(HttpContext ctx, ApiError e, string endpoint)
    {
        _metrics.Requests.WithLabels(endpoint, e.Status.ToString(System.Globalization.CultureInfo.InvariantCulture)).Inc();
        if (ctx.Response.HasStarted) return; // mid-stream: nothing more can be said
        await WriteJson(ctx, e.Status, w => ErrorObject(w, e));
    }

    /// <summary>OpenAI's <c>"error": {message, type, param, code}</c>, in a response body or an SSE event.</summary>
    private static void ErrorObject(Utf8JsonWriter w, ApiError e)
    {
        w.WriteStartObject("error");
        w.WriteString("message", e.Message);
        w.WriteString("type", e.Type);
        if (e.Param is null) w.WriteNull("param"); else w.WriteString("param", e.Param);
        if (e.Code is null) w.WriteNull("code"); else w.WriteString("code", e.Code);
        w.WriteEndObject();
    }
}
