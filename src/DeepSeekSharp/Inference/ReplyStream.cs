using System.Diagnostics;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Inference;

/// <summary>Everything that happens to one reply's tokens after the model: sampling, end-of-sequence, UTF-8
/// streaming, stop strings, the reasoning/answer split, token limits and usage figures. Shared by the
/// single-sequence <see cref="Generator"/> and the batch scheduler.</summary>
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
    }

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

    /// <summary>Takes a sampled token: appends the text it completes to <paramref name="output"/> and decides whether
    /// the reply is over. When it is not, the caller feeds <paramref name="token"/> to the model next.</summary>
    public void OnToken(int token, List<GenerationUpdate> output)
    {
        if (Generated++ == 0) _firstToken = _clock.Elapsed;
        if (token == _tokenizer.EosId || token == _modelEos)
        {
            Finish(FinishReason.Stop);
            return;
        }
        Sampler.Accept(token);
        var (emit, stopped) = _stops.Push(_detok.Push(token));
        Route(_reasoning.Push(emit), output);
        if (_inReasoning) _reasoningTokens++;
        if (stopped) Finish(FinishReason.Stop);
        else if (Generated >= MaxTokens) Finish(FinishReason.Length);
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
        output.Add(new GenerationUpdate(_inReasoning ? ReplyPart.Reasoning : ReplyPart.Answer, "",
            new GenerationUsage(_promptTokens, Generated, _reasoningTokens, FinishReason, _firstToken, _clock.Elapsed,
                DraftTokens, AcceptedDraftTokens, CachedPromptTokens)));
    }

    private void Route(List<(ReplyPart Part, string Text)> pieces, List<GenerationUpdate> output)
    {
        foreach (var (part, text) in pieces)
        {
            _inReasoning = part == ReplyPart.Reasoning;
            if (text.Length > 0) output.Add(new GenerationUpdate(part, text));
        }
    }
}
