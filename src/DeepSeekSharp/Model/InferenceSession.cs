namespace DeepSeekSharp.Model;

/// <summary>One sequence: its latent KV cache (and the MTP module's), scratch state, and the position reached.
/// Feed a prompt as one batch (prefill), then one token at a time (decode). Not thread-safe.</summary>
public sealed class InferenceSession : IDisposable
{
    private readonly DeepSeekModel _model;
    private readonly RunState _state;
    private readonly LatentKvCache _cache;
    private readonly LatentKvCache? _mtpCache;
    private int _lastBatch;
    private int _lastMtpBatch;

    internal InferenceSession(DeepSeekModel model, int capacity)
    {
        _model = model;
        ModelConfig c = model.Config;
        _state = new RunState(c, capacity);
        _cache = new LatentKvCache(c.NLayers, c.LatentCacheWidth, capacity, model.CacheFormat);
        if (model.MtpLayers > 0) _mtpCache = new LatentKvCache(model.MtpLayers, c.LatentCacheWidth, capacity, model.CacheFormat);
        model.PreparePoolThreads();
    }

    public ModelConfig Config => _model.Config;
    /// <summary>Tokens in the cache; the next token goes to this position.</summary>
    public int Position => _cache.Length;
    public int Capacity => _cache.Capacity;
    /// <summary>Positions the MTP module's own cache holds.</summary>
    public int MtpPosition => _mtpCache?.Length ?? 0;
    public LatentKvCache Cache => _cache;
    /// <summary>The MTP module's cache (null for a model without one): position i holds what the module computed from
    /// the main model's hidden state at i and token i + 1.</summary>
    public LatentKvCache? MtpCache => _mtpCache;
    /// <summary>Whether the model has a multi-token-prediction module (<see cref="ForwardMtp"/> works).</summary>
    public bool HasMtp => _mtpCache is not null;
    /// <summary>Which MLA formulation to use; <see cref="AttentionMode.Auto"/> by default.</summary>
    public AttentionMode Attention { get; set; }
    public IActivationObserver? Observer { get; set; }

    /// <summary>Hidden states after the final norm [n, dim] of the last <see cref="Forward(ReadOnlySpan{int}, Span{float}, bool, bool)"/>.</summary>
    public ReadOnlySpan<float> LastHidden => _state.Hidden.AsSpan(0, _lastBatch * Config.Dim);
    /// <summary>The MTP block's output (the residual stream before its head norm) [n, dim] of the last
    /// <see cref="ForwardMtp"/>: what a chained MTP step takes as its hidden state. Valid until the next pass.</summary>
    internal ReadOnlySpan<float> LastMtpHidden => _state.X.AsSpan(0, _lastMtpBatch * Config.Dim);

    /// <summary>Runs <paramref name="tokens"/> at positions Position.. and appends them to the cache.</summary>
    /// <param name="logits">[n, vocab] when <paramref name="allPositions"/>, else [vocab] for the last token</param>
    /// <param name="decoding">the tokens are decode steps (a token and its speculative drafts): under
    /// <see cref="AttentionMode.Auto"/> they are attended like single decode steps, each row's result the one it gets alone</param>
    public void Forward(ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions = true, bool decoding = false)
    {
        CheckTokens(tokens, Position);
        int needed = (allPositions ? tokens.Length : 1) * Config.VocabSize;
        if (logits.Length < needed)
            throw new ArgumentException($"logits holds {logits.Length} values; {needed} needed", nameof(logits));
        _model.Transformer.Forward(tokens, _cache, _state, Attention, allPositions, Observer, logits, decoding);
        _lastBatch = tokens.Length;
        _lastMtpBatch = 0; // the main pass wrote over the MTP block's output
    }

    /// <summary>Convenience overload returning [n, vocab] logits.</summary>
    public float[] Forward(ReadOnlySpan<int> tokens)
    {
        var logits = new float[tokens.Length * Config.VocabSize];
        Forward(tokens, logits);
        return logits;
    }

    /// <summary>Multi-token prediction: for each i, the MTP module's logits for the token after
    /// <paramref name="nextTokens"/>[i], given the main model's final-norm hidden state <paramref name="hidden"/>[i]
    /// of the position before it. Runs at MTP positions MtpPosition.. and appends to the MTP cache.</summary>
    /// <param name="hidden">[n, dim], e.g. rows of <see cref="LastHidden"/></param>
    /// <param name="logits">[n, vocab] when <paramref name="allPositions"/>, else [vocab] for the last token</param>
    /// <param name="decoding">as for <see cref="Forward(ReadOnlySpan{int}, Span{float}, bool, bool)"/></param>
    public void ForwardMtp(ReadOnlySpan<int> nextTokens, ReadOnlySpan<float> hidden, Span<float> logits, bool allPositions = true, bool decoding = false)
    {
        if (_mtpCache is null)
            throw new InvalidOperationException($"model '{_model.Path}' has no multi-token-prediction weights (num_nextn_predict_layers = {Config.NMtpLayers})");
        CheckTokens(nextTokens, MtpPosition);
        if (hidden.Length != nextTokens.Length * Config.Dim)
            throw new ArgumentException($"hidden holds {hidden.Length} values; {nextTokens.Length} tokens x hidden_size {Config.Dim} needed", nameof(hidden));
        int needed = (allPositions ? nextTokens.Length : 1) * Config.VocabSize;
        if (logits.Length < needed)
            throw new ArgumentException($"logits holds {logits.Length} values; {needed} needed", nameof(logits));
        // hidden may alias this session's LastHidden, which the MTP pass does not overwrite before reading it.
        _model.Transformer.ForwardMtp(0, nextTokens, hidden, _mtpCache, _state, Attention, logits, allPositions, decoding);
        _lastMtpBatch = nextTokens.Length;
    }

    private void CheckTokens(ReadOnlySpan<int> tokens, int position)
    {
        if (tokens.IsEmpty) throw new ArgumentException("no tokens to run", nameof(tokens));
        int vocab = Config.VocabSize;
        for (int i = 0; i < tokens.Length; i++)
            if ((uint)tokens[i] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens[i], $"token id {tokens[i]} at index {i} is outside the vocabulary [0, {vocab})");
        long end = (long)position + tokens.Length;
        if (end > Config.MaxPositionEmbeddings)
            throw new InvalidOperationException($"sequence would reach {end} positions, past max_position_embeddings ({Config.MaxPositionEmbeddings})");
        if (end > Capacity)
            throw new InvalidOperationException($"sequence would reach {end} positions, past the KV cache capacity ({Capacity}); {Capacity - position} positions are left");
    }

    /// <summary>Empties both caches; the session can start a new sequence.</summary>
    public void Reset()
    {
        _cache.Clear();
        _mtpCache?.Clear();
        _lastBatch = 0;
    }

    public void Dispose() { }
}
