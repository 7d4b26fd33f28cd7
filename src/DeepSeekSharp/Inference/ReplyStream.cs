using System.Diagnostics;
using System.Numerics.Tensors;
using DeepSeekSharp.Inference.Constraints;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Inference;

/// <summary>Everything that happens to one reply's tokens after the model: sampling (under the output format's
/// grammar, or forced when the reasoning budget is spent), end-of-sequence, UTF-8 streaming, stop strings, the
/// reasoning/answer split, log-probabilities, token limits and usage figures. Shared by the single-sequence
/// <see cref="Generator"/> and the batch scheduler.</summary>
internal sealed class ReplyStream
{
    private readonly Tokenizer _tokenizer;
    private readonly int? _modelEos;
    private readonly StreamingDetokenizer _detok;
    private readonly StopMatcher _stops;
    private readonly ReasoningParser _reasoning;
    private readonly Stopwatch _clock;
    private readonly int _promptTokens;
    private TimeSpan _firstToken;
    private int _reasoningTokens;
    private bool _inReasoning;
    private GrammarMatcher? _grammar;          // the answer's format, once the answer has begun
    private GrammarMatcher? _pendingGrammar;   // the format, while the reply is still reasoning
    private readonly int? _reasoningBudget;
    private readonly int[] _closeReasoning;   // tokens written for the model when its reasoning budget is spent
    private readonly Queue<int> _forced = new();
    private bool _budgetSpent;
    private bool _wasForced;                   // the token Next returned was forced, not sampled
    private readonly int? _topLogprobs;
    private float[]? _scratch;                 // [vocab] for log-softmax, when log-probabilities are asked for
    private TokenLogprob? _chosen;             // the log-probability of the token Next returned
    private List<TokenLogprob>? _logprobs;     // tokens since the last update
    private readonly Tools.ToolCallParser? _tools;
    private readonly List<Tools.ToolCallDelta> _calls = [];

    public ReplyStream(Tokenizer tokenizer, int? modelEos, int vocabSize, int[] promptIds, bool startsInReasoning,
        GenerationOptions options, int contextLength, Stopwatch? clock = null)
    {
        _tokenizer = tokenizer;
        _modelEos = modelEos;
        _clock = clock ?? Stopwatch.StartNew();
        _promptTokens = promptIds.Length;
        Sampler = new SamplerChain(options.Sampling, vocabSize, contextLength);
        foreach (int id in promptIds) Sampler.Accept(id);
        _detok = new StreamingDetokenizer(tokenizer, skipSpecialTokens: true);
        _stops = new StopMatcher(options.Stop);
        _reasoning = new ReasoningParser(startsInReasoning);
        _inReasoning = startsInReasoning;
        MaxTokens = Math.Min(options.MaxTokens ?? int.MaxValue, contextLength - promptIds.Length);
        OutputFormat? format = options.Format;
        if (options.Tools is { Count: > 0 } tools && options.ToolChoice != Tools.ToolChoice.None && Tools.ToolTokens.For(tokenizer) is { } toolTokens)
        {
            Tools.ToolCallFormat style = Tools.ToolCalling.FormatOf(tokenizer.Config.ChatTemplate);
            _tools = new Tools.ToolCallParser(toolTokens, style);
            if (options.ToolChoice.ForcesCall)
                format = OutputFormat.FromGrammar(Tools.ToolCalling.CallGrammar(tools, toolTokens, style, options.ToolChoice.FunctionName, options.ParallelToolCalls), "tool calls");
        }
        if (format is not null)
        {
            GrammarMatcher matcher = format.Bind(tokenizer, vocabSize, new[] { modelEos, tokenizer.EosId }.OfType<int>()).NewMatcher();
            if (startsInReasoning) _pendingGrammar = matcher;
            else _grammar = matcher;
        }
        _reasoningBudget = options.ReasoningBudget;
        _closeReasoning = _reasoningBudget is null ? [] : tokenizer.Encode(CloseReasoningText, addBos: false);
        _topLogprobs = options.TopLogprobs;
        if (_topLogprobs is not null) _scratch = new float[vocabSize];
    }

    /// <summary>What is written for a model whose reasoning budget is spent: R1's own way of ending its reasoning.</summary>
    public const string CloseReasoningText = "\n" + ReasoningParser.CloseTag + "\n\n";

    /// <summary>Checks a request before any work: options in range, prompt non-empty and shorter than the context.</summary>
    public static void Validate(int[] promptIds, GenerationOptions options, int vocabSize, int contextLength)
    {
        options.Validate(vocabSize);
        if (promptIds.Length == 0) throw new ArgumentException("the prompt is empty", "prompt");
        if (promptIds.Length >= contextLength)
            throw new ArgumentException($"the prompt has {promptIds.Length} tokens; the context holds {contextLength}, leaving no room to generate", "prompt");
    }

    public SamplerChain Sampler { get; }
    public int MaxTokens { get; }
    public int Generated { get; private set; }
    public bool Finished { get; private set; }
    public FinishReason FinishReason { get; private set; } = FinishReason.Length;
    /// <summary>Tokens drafted by speculation and how many of them the model accepted (for the usage).</summary>
    public int DraftTokens { get; set; }
    public int AcceptedDraftTokens { get; set; }
    /// <summary>Prompt tokens whose latents came from a cache instead of the prefill.</summary>
    public int CachedPromptTokens { get; set; }

    /// <summary>Tokens the reply may still take after the next one.</summary>
    private int Room => MaxTokens - Generated - 1;

    /// <summary>The next token from this position's logits: forced while the reasoning budget's closing is written,
    /// else sampled under the answer's grammar (if any).</summary>
    public int Next(ReadOnlySpan<float> logits)
    {
        SpendBudget();
        _wasForced = _forced.TryDequeue(out int f);
        int token = _wasForced ? f : Sampler.Sample(logits, _grammar, Room);
        if (_topLogprobs is not null) _chosen = Logprob(logits, token);
        return token;
    }

    /// <summary>As <see cref="Next(ReadOnlySpan{float})"/> for a position a draft was proposed for (speculative
    /// sampling; see <see cref="SamplerChain.Sample(ReadOnlySpan{float}, int, out bool, GrammarMatcher?, int)"/>).</summary>
    public int Next(ReadOnlySpan<float> logits, int draft, out bool accepted)
    {
        SpendBudget();
        int token;
        if (_wasForced = _forced.TryDequeue(out int f))
        {
            token = f;
            accepted = f == draft;
        }
        else token = Sampler.Sample(logits, draft, out accepted, _grammar, Room);
        if (_topLogprobs is not null) _chosen = Logprob(logits, token);
        return token;
    }

    /// <summary>Takes a sampled token: appends the text it completes to <paramref name="output"/> and decides whether
    /// the reply is over. When it is not, the caller feeds <paramref name="token"/> to the model next.</summary>
    public void OnToken(int token, List<GenerationUpdate> output)
    {
        if (Generated++ == 0) _firstToken = _clock.Elapsed;
        TokenLogprob? chosen = _chosen;
        _chosen = null;
        if (token == _tokenizer.EosId || token == _modelEos)
        {
            Finish(FinishReason.Stop);
            return;
        }
        Sampler.Accept(token);
        if (_grammar is not null && !_grammar.TryAccept(token) && !_wasForced)
            throw new InvalidOperationException($"token {token} was sampled against the output format's grammar");
        bool toolCall = _tools?.Takes(token) == true;
        if (chosen is not null) (_logprobs ??= []).Add(chosen with { Part = _inReasoning && !toolCall ? ReplyPart.Reasoning : ReplyPart.Answer });
        if (toolCall)
        {
            _tools!.Push(token, _tokenizer.TokenBytes(token), _calls);
            RouteCalls(output);
            if (Generated >= MaxTokens) Finish(FinishReason.Length);
            return;
        }
        string text = _detok.Push(token);
        var (emit, stopped) = _stops.Push(text);
        Route(_reasoning.Push(emit), output);
        if (_inReasoning) _reasoningTokens++;
        if (_pendingGrammar is not null && !_reasoning.InReasoning) StartGrammar(text);
        if (stopped) Finish(FinishReason.Stop);
        else if (Generated >= MaxTokens) Finish(FinishReason.Length);
    }

    /// <summary>Queues the closing tag for the model once its reasoning has used all but the tag's length of the budget.</summary>
    private void SpendBudget()
    {
        if (_reasoningBudget is not { } budget || _budgetSpent || !_reasoning.InReasoning || _reasoningTokens + _closeReasoning.Length < budget) return;
        _budgetSpent = true;
        foreach (int id in _closeReasoning) _forced.Enqueue(id);
    }

    /// <summary>The reasoning just closed: the answer's grammar starts, past whatever followed the closing tag in the
    /// token that closed it (ignored when the grammar refuses it; the reasoning parser drops leading newlines).</summary>
    private void StartGrammar(string tokenText)
    {
        _grammar = _pendingGrammar;
        _pendingGrammar = null;
        int close = tokenText.LastIndexOf('>');
        if (close >= 0 && close + 1 < tokenText.Length)
            _grammar!.TryAcceptBytes(System.Text.Encoding.UTF8.GetBytes(tokenText[(close + 1)..]));
    }

    /// <summary>log softmax(logits)[token] and the top alternatives.</summary>
    private TokenLogprob Logprob(ReadOnlySpan<float> logits, int token)
    {
        Span<float> s = _scratch.AsSpan(0, logits.Length);
        float max = TensorPrimitives.Max(logits);
        TensorPrimitives.Subtract(logits, max, s);
        TensorPrimitives.Exp(s, s);
        float logSum = max + MathF.Log(TensorPrimitives.Sum(s));
        int k = Math.Min(_topLogprobs!.Value, logits.Length);
        var top = new TokenLogprob[k];
        Span<int> best = stackalloc int[k]; // k ≤ GenerationOptions.MaxTopLogprobs
        if (k > 0) Kernels.TopK.Select(logits, best);
        for (int i = 0; i < k; i++) top[i] = Entry(best[i], logits[best[i]] - logSum, []);
        return Entry(token, logits[token] - logSum, top);
    }

    private TokenLogprob Entry(int id, float logprob, TokenLogprob[] top)
    {
        byte[] bytes = _tokenizer.TokenBytes(id).ToArray();
        return new TokenLogprob(id, System.Text.Encoding.UTF8.GetString(bytes), bytes, logprob, top);
    }

    private void Finish(FinishReason reason)
    {
        Finished = true;
        FinishReason = reason;
    }

    /// <summary>Flushes held-back text and appends the final update carrying the usage.</summary>
    public void Complete(List<GenerationUpdate> output)
    {
        Route(_reasoning.Push(_stops.Flush() + _detok.Flush()), output);
        Route(_reasoning.Flush(), output);
        _tools?.Flush(_calls);
        RouteCalls(output);
        // Calls made and complete (the block closed, or the model stopped after them): the reply waits for their results.
        if (_tools is { Calls: > 0 } t && (FinishReason == FinishReason.Stop || t.Closed)) FinishReason = FinishReason.ToolCalls;
        output.Add(new GenerationUpdate(_inReasoning ? ReplyPart.Reasoning : ReplyPart.Answer, "",
            new GenerationUsage(_promptTokens, Generated, _reasoningTokens, FinishReason, _firstToken, _clock.Elapsed,
                DraftTokens, AcceptedDraftTokens, CachedPromptTokens), TakeLogprobs()));
    }

    private List<TokenLogprob>? TakeLogprobs()
    {
        List<TokenLogprob>? taken = _logprobs;
        _logprobs = null;
        return taken;
    }

    private void RouteCalls(List<GenerationUpdate> output)
    {
        foreach (Tools.ToolCallDelta d in _calls) output.Add(new GenerationUpdate(ReplyPart.Answer, "", Logprobs: TakeLogprobs(), ToolCall: d));
        _calls.Clear();
    }

    private void Route(List<(ReplyPart Part, string Text)> pieces, List<GenerationUpdate> output)
    {
        foreach (var (part, text) in pieces)
        {
            _inReasoning = part == ReplyPart.Reasoning;
            if (text.Length > 0) output.Add(new GenerationUpdate(part, text, Logprobs: TakeLogprobs()));
        }
    }
}
