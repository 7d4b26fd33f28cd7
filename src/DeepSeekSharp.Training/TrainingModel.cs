using System.Numerics.Tensors;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Model;
using N = DeepSeekSharp.Formats.TensorNames.Hf;

namespace DeepSeekSharp.Training;

/// <summary>The weights of the loss terms (DeepSeek-V3: λ 0.3 for the first 10T tokens then 0.1, α 1e-4).</summary>
public sealed record LossWeights
{
    /// <summary>λ: weight of the MTP cross-entropy.</summary>
    public double Mtp { get; init; } = 0.3;
    /// <summary>α: weight of the sequence-wise balance loss.</summary>
    public double Balance { get; init; } = 1e-4;
    /// <summary>Weight of the next-token cross-entropy (1; 0 isolates the other terms' gradients).</summary>
    public double Main { get; init; } = 1.0;
}

/// <summary>The loss of one batch, by component (each unweighted except <see cref="Balance"/>, which includes α, and
/// <see cref="Total"/>).</summary>
public readonly record struct BatchLoss(double MainCe, double MtpCe, double Balance, double Total, int Targets, int MtpTargets);

/// <summary>The training forward and backward pass of a DeepSeek-V2/V3 model over a batch of B sequences of T tokens,
/// each from position 0: embedding → blocks → final norm → lm_head with next-token cross-entropy, and (V3) the MTP
/// module on the final hidden states h_i and the next token's embedding, predicting the token after it. The MTP
/// module's embedding and head are the main model's (tied), and its loss flows back into the main model through h_i.
/// Every buffer is allocated here, once; a step allocates nothing.</summary>
/// <example><code>
/// var ps = new ParameterSet(config); ps.Load("model-folder");
/// var model = new TrainingModel(ps, batch: 8, seqLen: 128);
/// ps.Grads.AsSpan().Clear();
/// BatchLoss loss = model.Step(tokens, targets, new LossWeights(), gradients: true);
/// </code></example>
public sealed class TrainingModel
{
    private readonly ModelConfig _c;
    private readonly ParameterSet _ps;
    private readonly int _b, _t, _n;
    private readonly TrainingBlock[] _blocks;
    private readonly TrainingBlock? _mtpBlock;
    private readonly BackwardScratch _scratch;
    private readonly Parameter _embed, _norm, _head;
    private readonly Parameter? _eNorm, _hNorm, _ehProj, _headNorm;
    private readonly float[] _x, _dx, _xFinal, _hidden, _dHidden;   // [n, dim]
    private readonly float[] _mtpCat, _mtpX, _mtpXFinal, _mtpNormed, _dMtpCat, _embedRows; // MTP, [B·(T−1), ·]
    private readonly float[] _logits;                              // [chunk, vocab]
    private readonly int[] _tokens, _targets;
    private readonly int _headChunk;

    public TrainingModel(ParameterSet ps, int batch, int seqLen)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batch);
        ArgumentOutOfRangeException.ThrowIfLessThan(seqLen, 2);
        ModelConfig c = _c = ps.Config;
        if (seqLen > c.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(seqLen), seqLen, $"sequence length exceeds max_position_embeddings ({c.MaxPositionEmbeddings})");
        _ps = ps; _b = batch; _t = seqLen; _n = batch * seqLen;
        var rope = new RotaryEmbedding(c);
        _blocks = [.. Enumerable.Range(0, c.NLayers).Select(l => new TrainingBlock(ps, l, c.IsMoeLayer(l), batch, seqLen, rope))];
        _embed = ps[N.Embed]; _norm = ps[N.Norm]; _head = c.TieWordEmbeddings ? _embed : ps[N.Head];
        int d = c.Dim, n = _n;
        _x = new float[n * d]; _dx = new float[n * d]; _xFinal = new float[n * d]; _hidden = new float[n * d]; _dHidden = new float[n * d];
        _tokens = new int[n]; _targets = new int[n];
        _scratch = new BackwardScratch(c, batch, seqLen);
        _headChunk = Math.Clamp((32 << 20) / c.VocabSize, 1, n);
        _logits = new float[_headChunk * c.VocabSize];
        if (c.NMtpLayers > 0)
        {
            int l = c.NLayers, m = batch * (seqLen - 1);
            _mtpBlock = new TrainingBlock(ps, l, c.NRoutedExperts > 0, batch, seqLen - 1, rope);
            _eNorm = ps[N.Layer(l, N.MtpENorm)]; _hNorm = ps[N.Layer(l, N.MtpHNorm)]; _ehProj = ps[N.Layer(l, N.MtpEhProj)]; _headNorm = ps[N.Layer(l, N.MtpHeadNorm)];
            _mtpCat = new float[m * 2 * d]; _dMtpCat = new float[m * 2 * d]; _embedRows = new float[m * d];
            _mtpX = new float[m * d]; _mtpXFinal = new float[m * d]; _mtpNormed = new float[m * d];
        }
        else _mtpCat = _dMtpCat = _embedRows = _mtpX = _mtpXFinal = _mtpNormed = [];
    }

    public int Batch => _b;
    public int SeqLen => _t;
    public ParameterSet Parameters => _ps;
    /// <summary>The main model's blocks then the MTP block: their last routing and loads.</summary>
    internal IEnumerable<TrainingBlock> Blocks => _mtpBlock is null ? _blocks : [.. _blocks, _mtpBlock];

    /// <summary>Bytes of activations saved for the backward pass plus the backward scratch and logits chunk.</summary>
    public long ActivationBytes =>
        4 * (Blocks.Sum(b => b.ActivationFloats) + _x.Length * 5L + _mtpCat.Length * 2L + _embedRows.Length + _mtpX.Length * 3L + _logits.Length
             + _scratch.Floats);

    /// <summary>MoE layers' expert loads ([n_routed_experts] each) from the last step, by layer index (the MTP layer is
    /// num_hidden_layers).</summary>
    public IEnumerable<(int Layer, int[] Loads)> ExpertLoads => Blocks.Where(b => b.IsMoe).Select(b => (b.Layer, b.Loads));

    /// <summary>Forward (and with <paramref name="gradients"/>, backward) over one batch; gradients are ADDED to
    /// <see cref="ParameterSet.Grads"/> (clear them before a step; leave them to accumulate micro-batches).</summary>
    /// <param name="tokens">[B·T] input ids, sequence-major</param>
    /// <param name="targets">[B·T] the token each position predicts (normally tokens[i + 1]), or −1 where no loss is
    /// taken (a sequence's last position, padding, prompt tokens under a loss mask). The MTP module's target at
    /// position i is the main target at i + 1.</param>
    /// <param name="gradScale">multiplies every gradient (1 / micro-batches when accumulating)</param>
    /// <param name="tokenWeights">[B·T] or empty: the next-token loss becomes Σ_i w_i · CE_i instead of the mean over
    /// targets (w_i may be negative: a policy-gradient step weighs each sampled token's −log p by its advantage
    /// term); <see cref="BatchLoss.MainCe"/> is then that weighted sum</param>
    /// <param name="tokenLoss">[B·T] or empty: receives each position's CE_i = −log p(target_i) (0 without a target)</param>
    public BatchLoss Step(ReadOnlySpan<int> tokens, ReadOnlySpan<int> targets, LossWeights weights, bool gradients, double gradScale = 1.0,
        ReadOnlySpan<float> tokenWeights = default, Span<float> tokenLoss = default)
    {
        ModelConfig c = _c;
        int n = _n, d = c.Dim, v = c.VocabSize;
        if (tokens.Length != n) throw new ArgumentException($"{tokens.Length} tokens for a batch of {_b} × {_t}", nameof(tokens));
        if (targets.Length != n) throw new ArgumentException($"{targets.Length} targets for a batch of {_b} × {_t}", nameof(targets));
        for (int i = 0; i < n; i++)
        {
            if ((uint)tokens[i] >= (uint)v) throw new ArgumentOutOfRangeException(nameof(tokens), tokens[i], $"token {i}: ids must be in [0, {v})");
            if (targets[i] < -1 || targets[i] >= v) throw new ArgumentOutOfRangeException(nameof(targets), targets[i], $"target {i}: ids must be in [0, {v}) or −1");
        }
        if (!tokenWeights.IsEmpty && tokenWeights.Length != n) throw new ArgumentException($"{tokenWeights.Length} token weights for {n} tokens", nameof(tokenWeights));
        if (!tokenLoss.IsEmpty && tokenLoss.Length != n) throw new ArgumentException($"{tokenLoss.Length} token losses for {n} tokens", nameof(tokenLoss));
        tokens.CopyTo(_tokens); targets.CopyTo(_targets);
        double alpha = weights.Balance * gradScale;

        // Main model forward.
        Span<float> embed = _ps.Value(_embed);
        for (int i = 0; i < n; i++) embed.Slice(tokens[i] * d, d).CopyTo(_x.AsSpan(i * d, d));
        double balance = 0;
        foreach (TrainingBlock b in _blocks) balance += b.Forward(_x, weights.Balance, _scratch);
        _x.CopyTo(_xFinal, 0);
        RmsNorm.Forward(_xFinal, _ps.Value(_norm), _hidden, (float)c.RmsNormEps);
        int mainTargets = Count(targets, 0);
        float mainScale = mainTargets == 0 ? 0 : (float)(weights.Main * gradScale / mainTargets);
        Array.Clear(_dHidden);

        // MTP forward and backward first: its gradient reaches the main model through h = _hidden.
        double mtpCe = 0;
        int mtpTargets = 0;
        if (_mtpBlock is not null)
        {
            mtpTargets = Count(targets, 1);
            (mtpCe, balance) = Mtp(weights, gradients, gradScale, mtpTargets, balance);
        }

        if (!tokenWeights.IsEmpty) mainScale = (float)(weights.Main * gradScale); // the weights carry the normalisation
        double mainCe = Head(_hidden, _dHidden, _targets, 0, _t, 0, _t, _head, mainScale, gradients, tokenWeights, tokenLoss);
        if (gradients)
        {
            _dx.AsSpan().Clear();
            RmsNorm.Backward(_dx, _ps.Grad(_norm), _dHidden, _xFinal, _ps.Value(_norm), (float)c.RmsNormEps);
            for (int l = _blocks.Length - 1; l >= 0; l--) _blocks[l].Backward(_dx, _scratch, alpha);
            Span<float> dEmbed = _ps.Grad(_embed);
            for (int i = 0; i < n; i++) TensorPrimitives.Add(dEmbed.Slice(tokens[i] * d, d), _dx.AsSpan(i * d, d), dEmbed.Slice(tokens[i] * d, d));
        }
        if (tokenWeights.IsEmpty) mainCe = mainTargets == 0 ? 0 : mainCe / mainTargets;
        mtpCe = mtpTargets == 0 ? 0 : mtpCe / mtpTargets;
        return new BatchLoss(mainCe, mtpCe, balance, weights.Main * mainCe + weights.Mtp * mtpCe + balance, mainTargets, mtpTargets);
    }

    /// <summary>Targets ≥ 0 at positions [from, T) of each sequence (from = 1 counts the MTP module's, whose row i
    /// predicts main target i + 1).</summary>
    private int Count(ReadOnlySpan<int> targets, int from)
    {
        int count = 0;
        for (int b = 0; b < _b; b++)
            for (int i = from; i < _t; i++) if (targets[b * _t + i] >= 0) count++;
        return count;
    }

    /// <summary>The MTP module over rows i = 0..T−2 of each sequence: x_i = eh_proj([enorm(embed(t_{i+1})); hnorm(h_i)]),
    /// its block, shared_head.norm and the (tied) head; cross-entropy against main target i + 1. With gradients, its
    /// backward adds into the embedding, the head and dL/dh (<c>_dHidden</c>).</summary>
    private (double Ce, double Balance) Mtp(LossWeights weights, bool gradients, double gradScale, int mtpTargets, double balance)
    {
        ModelConfig c = _c;
        int d = c.Dim, tm = _t - 1, m = _b * tm;
        float eps = (float)c.RmsNormEps;
        Span<float> embed = _ps.Value(_embed);
        for (int b = 0; b < _b; b++)
            for (int i = 0; i < tm; i++)
            {
                int row = b * tm + i;
                embed.Slice(_tokens[b * _t + i + 1] * d, d).CopyTo(_embedRows.AsSpan(row * d, d));
                RmsNorm.Forward(_embedRows.AsSpan(row * d, d), _ps.Value(_eNorm!), _mtpCat.AsSpan(row * 2 * d, d), eps);
                RmsNorm.Forward(_hidden.AsSpan((b * _t + i) * d, d), _ps.Value(_hNorm!), _mtpCat.AsSpan(row * 2 * d + d, d), eps);
            }
        Linear.Forward(_ps, _ehProj!, _mtpCat, _mtpX, m);
        balance += _mtpBlock!.Forward(_mtpX, weights.Balance, _scratch);
        _mtpX.CopyTo(_mtpXFinal, 0);
        RmsNorm.Forward(_mtpXFinal, _ps.Value(_headNorm!), _mtpNormed, eps);
        float scale = mtpTargets == 0 ? 0 : (float)(weights.Mtp * gradScale / mtpTargets);
        Span<float> dNormed = _scratch.Xn.AsSpan(0, m * d); // free until the block's backward
        dNormed.Clear();
        double ce = Head(_mtpNormed, dNormed, _targets, 1, _t, 0, tm, _head, scale, gradients);
        if (!gradients) return (ce, balance);

        Span<float> dx = _dx.AsSpan(0, m * d);
        dx.Clear();
        RmsNorm.Backward(dx, _ps.Grad(_headNorm!), dNormed, _mtpXFinal, _ps.Value(_headNorm!), eps);
        _mtpBlock.Backward(dx, _scratch, weights.Balance * gradScale);
        Array.Clear(_dMtpCat);
        Linear.Backward(_ps, _ehProj!, dx, _mtpCat, _dMtpCat, m);
        Span<float> dEmbed = _ps.Grad(_embed), dRow = _scratch.G.AsSpan(0, d);
        for (int b = 0; b < _b; b++)
            for (int i = 0; i < tm; i++)
            {
                int row = b * tm + i, token = _tokens[b * _t + i + 1];
                dRow.Clear();
                RmsNorm.Backward(dRow, _ps.Grad(_eNorm!), _dMtpCat.AsSpan(row * 2 * d, d), _embedRows.AsSpan(row * d, d), _ps.Value(_eNorm!), eps);
                TensorPrimitives.Add(dEmbed.Slice(token * d, d), dRow, dEmbed.Slice(token * d, d));
                RmsNorm.Backward(_dHidden.AsSpan((b * _t + i) * d, d), _ps.Grad(_hNorm!), _dMtpCat.AsSpan(row * 2 * d + d, d),
                    _hidden.AsSpan((b * _t + i) * d, d), _ps.Value(_hNorm!), eps);
            }
        return (ce, balance);
    }

    /// <summary>logits = head(x) for B sequences of <paramref name="rows"/> rows, in chunks of rows; returns the summed
    /// cross-entropy over rows with a target; with gradients, dlogits = scale · (softmax − onehot) feed dx and dHead.
    /// Row i of sequence b is scored against targets[b · stride + i + shift].</summary>
    /// <param name="rowWeights">empty, or a weight per row multiplying its loss and gradient (main head only)</param>
    /// <param name="rowLoss">empty, or each row's cross-entropy</param>
    private double Head(ReadOnlySpan<float> x, Span<float> dx, ReadOnlySpan<int> targets, int shift, int stride, int first, int rows,
        Parameter head, float scale, bool gradients, ReadOnlySpan<float> rowWeights = default, Span<float> rowLoss = default)
    {
        int d = _c.Dim, v = _c.VocabSize, total = _b * rows;
        double loss = 0;
        for (int r0 = 0; r0 < total; r0 += _headChunk)
        {
            int cnt = Math.Min(_headChunk, total - r0);
            Span<float> logits = _logits.AsSpan(0, cnt * v);
            Linear.Forward(_ps, head, x.Slice(r0 * d, cnt * d), logits, cnt);
            for (int r = 0; r < cnt; r++)
            {
                int row = r0 + r, b = row / rows, i = row % rows + first;
                int at = b * stride + i + shift, target = targets[at];
                Span<float> z = logits.Slice(r * v, v);
                if (!rowLoss.IsEmpty) rowLoss[at] = 0;
                if (target < 0) { z.Clear(); continue; }
                float w = rowWeights.IsEmpty ? 1f : rowWeights[at];
                double ce = gradients ? CrossEntropy.ForwardBackwardInPlace(z, target, scale * w) : CrossEntropy.Forward(z, target);
                if (!rowLoss.IsEmpty) rowLoss[at] = (float)ce;
                loss += w * ce;
            }
            if (gradients) Linear.Backward(_ps, head, logits, x.Slice(r0 * d, cnt * d), dx.Slice(r0 * d, cnt * d), cnt);
        }
        return loss;
    }
}
