using System.Numerics.Tensors;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Model;
using N = DeepSeekSharp.Formats.TensorNames.Hf;

namespace DeepSeekSharp.Training;

/// <summary>Buffers every block shares (sized for the main model's B·T rows; the MTP block uses fewer): the tensors a
/// block recomputes rather than keeps (its normed inputs, the gathered expert inputs, SwiGLU outputs: each one cheap
/// elementwise pass or copy), and the gradients of its intermediate tensors, needed only while it is differentiated.</summary>
internal sealed class BackwardScratch
{
    public BackwardScratch(ModelConfig c, int batch, int seqLen)
    {
        int n = batch * seqLen, h = c.NHeads, k = Math.Max(c.NActivatedExperts, 1);
        int ffn = Math.Max(c.InterDim, Math.Max(c.MoeInterDim * Math.Max(c.NSharedExperts, 1), 1));
        Xn = new float[n * c.Dim];
        Q = new float[n * h * c.QkHeadDim];
        Qa = new float[n * Math.Max(c.QLoraRank, 1)];
        Qan = new float[n * Math.Max(c.QLoraRank, 1)];
        Kva = new float[n * c.LatentCacheWidth];
        Cn = new float[n * c.KvLoraRank];
        Kvb = new float[n * h * (c.QkNopeHeadDim + c.VHeadDim)];
        KpeHeads = new float[batch * h * seqLen * c.QkRopeHeadDim];
        AttnO = new float[n * h * c.VHeadDim];
        DProbs = new float[batch * h * seqLen];
        G = new float[n * ffn]; U = new float[n * ffn]; H = new float[n * ffn];
        NormIn = new float[n * c.Dim];
        Hidden = new float[n * ffn];
        if (c.NRoutedExperts > 0)
        {
            GatherIn = new float[n * k * c.Dim];
            ExpertHidden = new float[n * k * c.MoeInterDim];
            EOut = new float[n * k * c.Dim]; GX = new float[n * k * c.Dim];
            EG = new float[n * k * c.MoeInterDim]; EU = new float[n * k * c.MoeInterDim]; EH = new float[n * k * c.MoeInterDim];
            Scores = new float[n * c.NRoutedExperts]; Logits = new float[n * c.NRoutedExperts];
            RouteW = new float[n * k];
        }
    }

    // Recomputed activations: attn_norm(x) or ffn_norm(x); the experts' gathered inputs; SwiGLU outputs.
    public readonly float[] NormIn, Hidden, GatherIn = [], ExpertHidden = [];
    // Gradients.
    public readonly float[] Xn, Q, Qa, Qan, Kva, Cn, Kvb, KpeHeads, AttnO, DProbs, G, U, H;
    public readonly float[] EOut = [], GX = [], EG = [], EU = [], EH = [], Scores = [], Logits = [], RouteW = [];

    public long Floats => new[] { NormIn, Hidden, GatherIn, ExpertHidden, Xn, Q, Qa, Qan, Kva, Cn, Kvb, KpeHeads, AttnO, DProbs, G, U, H,
        EOut, GX, EG, EU, EH, Scores, Logits, RouteW }.Sum(a => (long)a.Length);
}

/// <summary>One decoder block (attention, then a dense MLP or DeepSeekMoE, each with a residual) over a batch of B
/// sequences of T tokens from position 0, with the activations its backward pass reads, and that backward pass.
/// The attention is MLA's expanded form (k_nope | v = W_kvB · kv_norm(c_kv)), which is what training differentiates;
/// shapes: H heads, D = qk_nope_head_dim, R = qk_rope_head_dim, V = v_head_dim, C = kv_lora_rank.</summary>
internal sealed class TrainingBlock
{
    private readonly ModelConfig _c;
    private readonly ParameterSet _ps;
    private readonly int _layer, _b, _t, _n;
    private readonly float _eps, _scale;
    private readonly float[] _cos, _sin; // [T, R/2]

    // Parameters.
    private readonly Parameter _attnNorm, _wkvA, _kvNorm, _wkvB, _wo, _ffnNorm;
    private readonly Parameter? _wq, _wqA, _qNorm, _wqB;
    private readonly Parameter? _gate, _up, _down, _router, _sGate, _sUp, _sDown;
    private readonly Parameter[] _eGate = [], _eUp = [], _eDown = [];

    // Saved activations ([n, ·] unless noted).
    private readonly float[] _xIn, _qa, _qan, _q, _kva, _cn, _kpe, _kvb, _probs, _attnO, _xMid;
    private readonly float[] _g, _u;                              // dense MLP or shared experts: gate x, up x
    private readonly float[] _logits = [], _scores = [], _weights = [], _eg = [], _eu = [], _eOut = [];
    private readonly int[] _chosen = [], _start = [], _slotRow = [], _slotK = [], _order = [];
    private int _usedExperts;

    public TrainingBlock(ParameterSet ps, int layer, bool moe, int batch, int seqLen, RotaryEmbedding rope)
    {
        ModelConfig c = _c = ps.Config;
        _ps = ps; _layer = layer; _b = batch; _t = seqLen; _n = batch * seqLen;
        _eps = (float)c.RmsNormEps; _scale = (float)c.SoftmaxScale;
        int half = c.QkRopeHeadDim / 2;
        _cos = new float[seqLen * half]; _sin = new float[seqLen * half];
        for (int p = 0; p < seqLen; p++) rope.CosSin(p, _cos.AsSpan(p * half, half), _sin.AsSpan(p * half, half));

        Parameter P(string suffix) => ps[N.Layer(layer, suffix)];
        _attnNorm = P(N.AttnNorm); _wkvA = P(N.WkvA); _kvNorm = P(N.KvNorm); _wkvB = P(N.WkvB); _wo = P(N.Wo); _ffnNorm = P(N.FfnNorm);
        if (c.HasQLora) { _wqA = P(N.WqA); _qNorm = P(N.QNorm); _wqB = P(N.WqB); }
        else _wq = P(N.Wq);

        int n = _n, h = c.NHeads, d = c.Dim;
        _xIn = new float[n * d]; _xMid = new float[n * d];
        _qa = new float[c.HasQLora ? n * c.QLoraRank : 0]; _qan = new float[_qa.Length];
        _q = new float[n * h * c.QkHeadDim];
        _kva = new float[n * c.LatentCacheWidth]; _cn = new float[n * c.KvLoraRank]; _kpe = new float[n * c.QkRopeHeadDim];
        _kvb = new float[n * h * (c.QkNopeHeadDim + c.VHeadDim)];
        _probs = new float[(long)batch * h * seqLen * seqLen];
        _attnO = new float[n * h * c.VHeadDim];
        if (!moe)
        {
            _gate = P(N.DenseMlp + N.Gate); _up = P(N.DenseMlp + N.Up); _down = P(N.DenseMlp + N.Down);
            _g = new float[n * c.InterDim]; _u = new float[_g.Length];
            return;
        }
        int e = c.NRoutedExperts, k = c.NActivatedExperts, mi = c.MoeInterDim;
        _router = P(N.Router);
        _eGate = [.. Enumerable.Range(0, e).Select(i => P(N.Expert(i) + N.Gate))];
        _eUp = [.. Enumerable.Range(0, e).Select(i => P(N.Expert(i) + N.Up))];
        _eDown = [.. Enumerable.Range(0, e).Select(i => P(N.Expert(i) + N.Down))];
        int shared = c.NSharedExperts * mi;
        if (shared > 0) { _sGate = P(N.SharedExperts + N.Gate); _sUp = P(N.SharedExperts + N.Up); _sDown = P(N.SharedExperts + N.Down); }
        _g = new float[n * shared]; _u = new float[_g.Length];
        _logits = new float[n * e]; _scores = new float[n * e]; _weights = new float[n * k]; _chosen = new int[n * k];
        _start = new int[e + 1]; _slotRow = new int[n * k]; _slotK = new int[n * k]; _order = new int[e];
        _eOut = new float[n * k * d];
        _eg = new float[n * k * mi]; _eu = new float[_eg.Length];
        Loads = new int[e];
        SequenceCounts = new int[batch * e];
    }

    public bool IsMoe => _router is not null;
    public int Layer => _layer;
    /// <summary>MoE: assignments per expert over the batch in the last forward pass (the biased choice).</summary>
    public int[] Loads { get; } = [];
    /// <summary>MoE: [B, E] assignments per sequence and expert (f of the balance loss).</summary>
    public int[] SequenceCounts { get; } = [];
    /// <summary>MoE: [n, k] chosen experts of the last forward pass.</summary>
    public ReadOnlySpan<int> Chosen => _chosen;
    /// <summary>MoE: [n, k] routing weights of the last forward pass.</summary>
    public ReadOnlySpan<float> RouteWeights => _weights;
    /// <summary>Floats of saved activations.</summary>
    public long ActivationFloats =>
        new[] { _xIn, _qa, _qan, _q, _kva, _cn, _kpe, _kvb, _probs, _attnO, _xMid, _g, _u, _logits, _scores, _weights, _eg, _eu, _eOut }
            .Sum(a => (long)a.Length);

    /// <summary>x ← x + attn(attn_norm(x)); x ← x + ffn(ffn_norm(x)). Returns the balance loss term Σ_b α/B Σ_i f_i P_i.</summary>
    /// <param name="x">[B·T, dim] the residual stream, updated in place</param>
    public double Forward(Span<float> x, double alpha, BackwardScratch s)
    {
        int n = _n, d = _c.Dim;
        x[..(n * d)].CopyTo(_xIn);
        Span<float> xn = s.NormIn.AsSpan(0, n * d);
        RmsNorm.Forward(_xIn, _ps.Value(_attnNorm), xn, _eps);
        Attention(xn);
        Span<float> o = x[..(n * d)];
        Linear.Forward(_ps, _wo, _attnO, o, n);
        TensorPrimitives.Add(_xIn, o, _xMid);
        RmsNorm.Forward(_xMid, _ps.Value(_ffnNorm), xn, _eps);
        double balance = 0;
        if (IsMoe) balance = Moe(xn, o, alpha, s);
        else Mlp(_gate!, _up!, _down!, xn, _g, _u, s.Hidden, o, n);
        TensorPrimitives.Add(_xMid, o, x[..(n * d)]);
        return balance;
    }

    /// <summary>Given dL/d(output) in <paramref name="dx"/>, accumulates every parameter's gradient and leaves dL/d(input)
    /// in <paramref name="dx"/>.</summary>
    public void Backward(Span<float> dx, BackwardScratch s, double alpha)
    {
        int n = _n, d = _c.Dim;
        dx = dx[..(n * d)];
        // ffn half: dx is dL/d(x_mid) from the residual, plus the path through ffn_norm.
        Span<float> dxn = s.Xn.AsSpan(0, n * d), xn = s.NormIn.AsSpan(0, n * d);
        dxn.Clear();
        RmsNorm.Forward(_xMid, _ps.Value(_ffnNorm), xn, _eps); // recomputed: ffn_norm(x_mid)
        if (IsMoe) MoeBackward(xn, dx, dxn, s, alpha);
        else MlpBackward(_gate!, _up!, _down!, xn, _g, _u, dx, dxn, s, n);
        RmsNorm.Backward(dx, _ps.Grad(_ffnNorm), dxn, _xMid, _ps.Value(_ffnNorm), _eps);
        // attention half.
        Span<float> dAttnO = s.AttnO.AsSpan(0, _attnO.Length);
        dAttnO.Clear();
        Linear.Backward(_ps, _wo, dx, _attnO, dAttnO, n);
        dxn.Clear();
        RmsNorm.Forward(_xIn, _ps.Value(_attnNorm), xn, _eps); // recomputed: attn_norm(x)
        AttentionBackward(xn, dAttnO, dxn, s);
        RmsNorm.Backward(dx, _ps.Grad(_attnNorm), dxn, _xIn, _ps.Value(_attnNorm), _eps);
    }

    // ---- attention ----

    /// <param name="xn">[n, dim] attn_norm(x)</param>
    private void Attention(ReadOnlySpan<float> xn)
    {
        ModelConfig c = _c;
        int n = _n, h = c.NHeads, qk = c.QkHeadDim, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim, rank = c.KvLoraRank, width = c.LatentCacheWidth, half = rope / 2;
        if (_wq is not null) Linear.Forward(_ps, _wq, xn, _q, n);
        else
        {
            Linear.Forward(_ps, _wqA!, xn, _qa, n);
            RmsNorm.Forward(_qa, _ps.Value(_qNorm!), _qan, _eps);
            Linear.Forward(_ps, _wqB!, _qan, _q, n);
        }
        Linear.Forward(_ps, _wkvA, xn, _kva, n);
        for (int r = 0; r < n; r++)
        {
            int p = r % _t;
            ReadOnlySpan<float> cos = _cos.AsSpan(p * half, half), sin = _sin.AsSpan(p * half, half);
            for (int head = 0; head < h; head++) Rope.ApplyInterleaved(_q.AsSpan((r * h + head) * qk + nope, rope), cos, sin);
            RmsNorm.Forward(_kva.AsSpan(r * width, rank), _ps.Value(_kvNorm), _cn.AsSpan(r * rank, rank), _eps);
            _kva.AsSpan(r * width + rank, rope).CopyTo(_kpe.AsSpan(r * rope, rope));
            Rope.ApplyInterleaved(_kpe.AsSpan(r * rope, rope), cos, sin);
        }
        Linear.Forward(_ps, _wkvB, _cn, _kvb, n);
        AttentionJob.Run(this, null, backward: false);
    }

    private void AttentionBackward(ReadOnlySpan<float> xn, ReadOnlySpan<float> dAttnO, Span<float> dxn, BackwardScratch s)
    {
        ModelConfig c = _c;
        int n = _n, h = c.NHeads, qk = c.QkHeadDim, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim, rank = c.KvLoraRank, width = c.LatentCacheWidth, half = rope / 2;
        Span<float> dq = s.Q.AsSpan(0, _q.Length), dkvb = s.Kvb.AsSpan(0, _kvb.Length), dkva = s.Kva.AsSpan(0, _kva.Length);
        Span<float> dcn = s.Cn.AsSpan(0, _cn.Length);
        dq.Clear(); dkvb.Clear(); dkva.Clear(); dcn.Clear();
        AttentionJob.Run(this, s, backward: true);
        // k_pe is shared by the heads: add the heads' gradients in head order (then rotate back, into kv_a's rope part).
        for (int r = 0; r < n; r++)
        {
            int b = r / _t, p = r % _t;
            Span<float> dkpe = dkva.Slice(r * width + rank, rope);
            for (int head = 0; head < h; head++)
                TensorPrimitives.Add(dkpe, s.KpeHeads.AsSpan((((b * h + head) * _t) + p) * rope, rope), dkpe);
            ReadOnlySpan<float> cos = _cos.AsSpan(p * half, half), sin = _sin.AsSpan(p * half, half);
            Rope.ApplyInterleavedBackward(dkpe, cos, sin);
            for (int head = 0; head < h; head++) Rope.ApplyInterleavedBackward(dq.Slice((r * h + head) * qk + nope, rope), cos, sin);
        }
        Linear.Backward(_ps, _wkvB, dkvb, _cn, dcn, n);
        for (int r = 0; r < n; r++)
            RmsNorm.Backward(dkva.Slice(r * width, rank), _ps.Grad(_kvNorm), dcn.Slice(r * rank, rank), _kva.AsSpan(r * width, rank), _ps.Value(_kvNorm), _eps);
        Linear.Backward(_ps, _wkvA, dkva, xn, dxn, n);
        if (_wq is not null) Linear.Backward(_ps, _wq, dq, xn, dxn, n);
        else
        {
            Span<float> dqan = s.Qan.AsSpan(0, _qan.Length), dqa = s.Qa.AsSpan(0, _qa.Length);
            dqan.Clear(); dqa.Clear();
            Linear.Backward(_ps, _wqB!, dq, _qan, dqan, n);
            RmsNorm.Backward(dqa, _ps.Grad(_qNorm!), dqan, _qa, _ps.Value(_qNorm!), _eps);
            Linear.Backward(_ps, _wqA!, dqa, xn, dxn, n);
        }
    }

    /// <summary>Causal attention of one (sequence, head) per chunk; forward: probabilities and outputs; backward: the
    /// gradients of q, of k_nope | v (this head's columns of kv_b's output) and of this head's share of k_pe.</summary>
    private sealed class AttentionJob : PoolJob
    {
        [ThreadStatic] private static AttentionJob? _mine;
        private TrainingBlock _blk = null!;
        private BackwardScratch? _s;
        private bool _backward;

        public static void Run(TrainingBlock blk, BackwardScratch? s, bool backward)
        {
            AttentionJob job = _mine ??= new AttentionJob();
            (job._blk, job._s, job._backward) = (blk, s, backward);
            WorkerPool.Shared.Run(job, blk._b * blk._c.NHeads);
            (job._blk, job._s) = (null!, null);
        }

        public override void Execute(int chunk)
        {
            if (_backward) _blk.AttendBackward(chunk, _s!);
            else _blk.Attend(chunk);
        }
    }

    private void Attend(int chunk)
    {
        ModelConfig c = _c;
        int h = c.NHeads, b = chunk / h, head = chunk % h, T = _t;
        int qk = c.QkHeadDim, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim, vd = c.VHeadDim, kvw = nope + vd;
        for (int t = 0; t < T; t++)
        {
            int row = b * T + t;
            ReadOnlySpan<float> qn = _q.AsSpan((row * h + head) * qk, nope), qp = _q.AsSpan((row * h + head) * qk + nope, rope);
            Span<float> p = _probs.AsSpan((int)(((long)chunk * T + t) * T), T);
            for (int s = 0; s <= t; s++)
            {
                int sr = b * T + s;
                p[s] = (Dot.Compute(qn, _kvb.AsSpan((sr * h + head) * kvw, nope)) + Dot.Compute(qp, _kpe.AsSpan(sr * rope, rope))) * _scale;
            }
            Softmax.InPlace(p[..(t + 1)]);
            p[(t + 1)..].Clear();
            Span<float> o = _attnO.AsSpan((row * h + head) * vd, vd);
            o.Clear();
            for (int s = 0; s <= t; s++) Axpy.Compute(_kvb.AsSpan(((b * T + s) * h + head) * kvw + nope, vd), p[s], o);
        }
    }

    private void AttendBackward(int chunk, BackwardScratch sc)
    {
        ModelConfig c = _c;
        int h = c.NHeads, b = chunk / h, head = chunk % h, T = _t;
        int qk = c.QkHeadDim, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim, vd = c.VHeadDim, kvw = nope + vd;
        Span<float> dp = sc.DProbs.AsSpan(chunk * T, T);
        Span<float> dkpe = sc.KpeHeads.AsSpan(chunk * T * rope, T * rope);
        dkpe.Clear();
        for (int t = 0; t < T; t++)
        {
            int row = b * T + t;
            ReadOnlySpan<float> p = _probs.AsSpan((int)(((long)chunk * T + t) * T), t + 1);
            ReadOnlySpan<float> dout = sc.AttnO.AsSpan((row * h + head) * vd, vd);
            ReadOnlySpan<float> qn = _q.AsSpan((row * h + head) * qk, nope), qp = _q.AsSpan((row * h + head) * qk + nope, rope);
            Span<float> dqn = sc.Q.AsSpan((row * h + head) * qk, nope), dqp = sc.Q.AsSpan((row * h + head) * qk + nope, rope);
            float sum = 0;
            for (int s = 0; s <= t; s++)
            {
                dp[s] = Dot.Compute(dout, _kvb.AsSpan(((b * T + s) * h + head) * kvw + nope, vd));
                sum += p[s] * dp[s];
            }
            for (int s = 0; s <= t; s++)
            {
                int at = ((b * T + s) * h + head) * kvw;
                Axpy.Compute(dout, p[s], sc.Kvb.AsSpan(at + nope, vd));                 // dv
                float ds = p[s] * (dp[s] - sum) * _scale;                                 // d(score before scaling)
                Axpy.Compute(_kvb.AsSpan(at, nope), ds, dqn);
                Axpy.Compute(_kpe.AsSpan((b * T + s) * rope, rope), ds, dqp);
                Axpy.Compute(qn, ds, sc.Kvb.AsSpan(at, nope));                          // dk_nope
                Axpy.Compute(qp, ds, dkpe.Slice(s * rope, rope));                        // this head's dk_pe
            }
        }
    }

    // ---- feed-forward ----

    private void Mlp(Parameter gate, Parameter up, Parameter down, ReadOnlySpan<float> x, Span<float> g, Span<float> u, Span<float> h, Span<float> y, int n)
    {
        int inter = gate.Rows;
        Linear.Forward(_ps, gate, x, g, n);
        Linear.Forward(_ps, up, x, u, n);
        SwiGlu.Forward(g[..(n * inter)], u[..(n * inter)], h);
        Linear.Forward(_ps, down, h, y, n);
    }

    /// <summary>dx += d(down(silu(gate x) ⊙ up x)) for dy; the scratch's G, U, H hold the intermediate gradients.</summary>
    private void MlpBackward(Parameter gate, Parameter up, Parameter down, ReadOnlySpan<float> x, ReadOnlySpan<float> g, ReadOnlySpan<float> u,
        ReadOnlySpan<float> dy, Span<float> dx, BackwardScratch s, int n) =>
        MlpBackward(gate, up, down, x, g, u, s.Hidden, dy, dx, s.G, s.U, s.H, n);

    /// <param name="hBuf">where silu(g) ⊙ u is recomputed (down's input, for its weight gradient)</param>
    private void MlpBackward(Parameter gate, Parameter up, Parameter down, ReadOnlySpan<float> x, ReadOnlySpan<float> g, ReadOnlySpan<float> u,
        Span<float> hBuf, ReadOnlySpan<float> dy, Span<float> dx, Span<float> dgBuf, Span<float> duBuf, Span<float> dhBuf, int n)
    {
        int inter = gate.Rows, m = n * inter;
        Span<float> dg = dgBuf[..m], du = duBuf[..m], dh = dhBuf[..m], h = hBuf[..m];
        SwiGlu.Forward(g[..m], u[..m], h);
        dg.Clear(); du.Clear(); dh.Clear();
        Linear.Backward(_ps, down, dy, h, dh, n);
        SwiGlu.Backward(dg, du, dh, g[..m], u[..m]);
        Linear.Backward(_ps, gate, dg, x, dx, n);
        Linear.Backward(_ps, up, du, x, dx, n);
    }

    /// <summary>DeepSeekMoE: routes every token with the engine's <see cref="Router"/>, gathers each expert's tokens,
    /// runs the experts in parallel, then adds Σ w·expert(x) (ascending expert order) to the shared experts' output.
    /// Returns this layer's balance-loss term.</summary>
    /// <param name="xn">[n, dim] ffn_norm(x)</param>
    private double Moe(ReadOnlySpan<float> xn, Span<float> y, double alpha, BackwardScratch s)
    {
        ModelConfig c = _c;
        int n = _n, d = c.Dim, e = c.NRoutedExperts, k = c.NActivatedExperts;
        Linear.Forward(_ps, _router!, xn, _logits, n);
        Span<float> choice = stackalloc float[e];
        Span<float> bias = _ps.RouterBias(_layer);
        for (int t = 0; t < n; t++)
            Router.Route(c, _logits.AsSpan(t * e, e), bias, _scores.AsSpan(t * e, e), choice, _chosen.AsSpan(t * k, k), _weights.AsSpan(t * k, k));

        Array.Clear(Loads); Array.Clear(SequenceCounts);
        for (int t = 0; t < n; t++)
            for (int j = 0; j < k; j++)
            {
                Loads[_chosen[t * k + j]]++;
                SequenceCounts[t / _t * e + _chosen[t * k + j]]++;
            }
        int slots = 0;
        _usedExperts = 0;
        for (int x = 0; x < e; x++)
        {
            _start[x] = slots;
            for (int t = 0; t < n; t++)
            {
                int at = _chosen.AsSpan(t * k, k).IndexOf(x);
                if (at < 0) continue;
                _slotRow[slots] = t; _slotK[slots] = at;
                slots++;
            }
            if (slots > _start[x]) _order[_usedExperts++] = x;
        }
        _start[e] = slots;
        Gather(xn, s);
        ExpertJob.Run(this, s, backward: false, _usedExperts);

        if (_sGate is not null) Mlp(_sGate, _sUp!, _sDown!, xn, _g, _u, s.Hidden, y, n);
        else y[..(n * d)].Clear();
        for (int i = 0; i < slots; i++)
            Axpy.Compute(_eOut.AsSpan(i * d, d), _weights[_slotRow[i] * k + _slotK[i]], y.Slice(_slotRow[i] * d, d));
        return BalanceLoss(alpha);
    }

    /// <summary>Σ_b α/B Σ_i f_i P_i with f_i = E/(K·T) · (tokens of sequence b that chose i) and P_i the mean over the
    /// sequence of s'_i (the scores normalised over all experts: sigmoid / Σ sigmoid, or the softmax itself).</summary>
    private double BalanceLoss(double alpha)
    {
        ModelConfig c = _c;
        int e = c.NRoutedExperts, k = c.NActivatedExperts;
        double total = 0;
        for (int b = 0; b < _b; b++)
        {
            double seq = 0;
            for (int t = b * _t; t < (b + 1) * _t; t++)
            {
                ReadOnlySpan<float> s = _scores.AsSpan(t * e, e);
                double norm = c.ScoreFunc == ScoreFunc.Sigmoid ? TensorPrimitives.Sum(s) : 1.0;
                for (int i = 0; i < e; i++) seq += SequenceCounts[b * e + i] * (double)s[i] / norm;
            }
            total += seq * e / ((double)k * _t) / _t;
        }
        return alpha * total / _b;
    }

    /// <summary>Each expert's tokens' inputs in consecutive slots (expert order, then token order).</summary>
    private void Gather(ReadOnlySpan<float> xn, BackwardScratch s)
    {
        int d = _c.Dim;
        for (int i = 0; i < _start[_c.NRoutedExperts]; i++) xn.Slice(_slotRow[i] * d, d).CopyTo(s.GatherIn.AsSpan(i * d, d));
    }

    private void MoeBackward(ReadOnlySpan<float> xn, ReadOnlySpan<float> dy, Span<float> dxn, BackwardScratch s, double alpha)
    {
        ModelConfig c = _c;
        int n = _n, d = c.Dim, e = c.NRoutedExperts, k = c.NActivatedExperts, slots = _start[e];
        if (_sGate is not null) MlpBackward(_sGate, _sUp!, _sDown!, xn, _g, _u, dy, dxn, s, n);
        // d(routing weight) = dy · expert output; d(expert output) = w · dy.
        Span<float> dw = s.RouteW.AsSpan(0, n * k);
        dw.Clear();
        for (int i = 0; i < slots; i++)
        {
            int t = _slotRow[i], at = t * k + _slotK[i];
            ReadOnlySpan<float> dyt = dy.Slice(t * d, d);
            dw[at] = Dot.Compute(dyt, _eOut.AsSpan(i * d, d));
            TensorPrimitives.Multiply(dyt, _weights[at], s.EOut.AsSpan(i * d, d));
        }
        s.GX.AsSpan(0, slots * d).Clear();
        Gather(xn, s); // recomputed
        ExpertJob.Run(this, s, backward: true, _usedExperts);
        for (int i = 0; i < slots; i++) TensorPrimitives.Add(dxn.Slice(_slotRow[i] * d, d), s.GX.AsSpan(i * d, d), dxn.Slice(_slotRow[i] * d, d));

        // Router: scores get gradients from the routing weights and from P of the balance loss.
        Span<float> ds = s.Scores.AsSpan(0, n * e), dl = s.Logits.AsSpan(0, n * e);
        ds.Clear();
        float routeScale = (float)c.RouteScale;
        float balanceGrad = (float)(alpha / _b * e / ((double)k * _t) / _t); // ∂/∂s'_{i,t} = α/B · f_i / T, f_i = E/(K T) · count
        for (int t = 0; t < n; t++)
        {
            ReadOnlySpan<float> sc = _scores.AsSpan(t * e, e);
            Span<float> dst = ds.Slice(t * e, e);
            ReadOnlySpan<int> chosen = _chosen.AsSpan(t * k, k);
            if (c.NormTopkProb)
            {
                // w_j = RS · s_j / S, S = Σ_chosen s: ∂L/∂s_j = RS · (dw_j / S − Σ_i dw_i s_i / S²).
                float sum = 0, dot = 0;
                for (int j = 0; j < k; j++) { sum += sc[chosen[j]]; dot += dw[t * k + j] * sc[chosen[j]]; }
                for (int j = 0; j < k; j++) dst[chosen[j]] += routeScale * (dw[t * k + j] / sum - dot / (sum * sum));
            }
            else
                for (int j = 0; j < k; j++) dst[chosen[j]] += routeScale * dw[t * k + j];
            if (alpha != 0)
            {
                ReadOnlySpan<int> counts = SequenceCounts.AsSpan(t / _t * e, e);
                if (c.ScoreFunc == ScoreFunc.Sigmoid)
                {
                    // s' = s / Σ s: ∂L/∂s_j = (g_j − Σ_i g_i s'_i) / Σ s with g_i = ∂L/∂s'_i.
                    float total = TensorPrimitives.Sum(sc), dot = 0;
                    for (int i = 0; i < e; i++) dot += balanceGrad * counts[i] * sc[i] / total;
                    for (int i = 0; i < e; i++) dst[i] += (balanceGrad * counts[i] - dot) / total;
                }
                else
                    for (int i = 0; i < e; i++) dst[i] += balanceGrad * counts[i];
            }
            Span<float> dlt = dl.Slice(t * e, e);
            if (c.ScoreFunc == ScoreFunc.Sigmoid)
                for (int i = 0; i < e; i++) dlt[i] = dst[i] * sc[i] * (1 - sc[i]);
            else
            {
                float dot = Dot.Compute(dst, sc);
                for (int i = 0; i < e; i++) dlt[i] = sc[i] * (dst[i] - dot);
            }
        }
        Linear.Backward(_ps, _router!, dl, xn, dxn, n);
    }

    /// <summary>One routed expert per chunk over its gathered tokens, in expert order. Forward: its outputs; backward:
    /// its weights' gradients and its tokens' input gradients (into the scratch's GX slots).</summary>
    private sealed class ExpertJob : PoolJob
    {
        [ThreadStatic] private static ExpertJob? _mine;
        private TrainingBlock _blk = null!;
        private BackwardScratch _s = null!;
        private bool _backward;

        public static void Run(TrainingBlock blk, BackwardScratch s, bool backward, int experts)
        {
            ExpertJob job = _mine ??= new ExpertJob();
            (job._blk, job._s, job._backward) = (blk, s, backward);
            WorkerPool.Shared.Run(job, experts);
            (job._blk, job._s) = (null!, null!);
        }

        public override void Execute(int chunk)
        {
            TrainingBlock b = _blk;
            BackwardScratch s = _s;
            int x = b._order[chunk], first = b._start[x], m = b._start[x + 1] - first, d = b._c.Dim, mi = b._c.MoeInterDim;
            Span<float> gx = s.GatherIn.AsSpan(first * d, m * d), g = b._eg.AsSpan(first * mi, m * mi), u = b._eu.AsSpan(first * mi, m * mi);
            Span<float> h = s.ExpertHidden.AsSpan(first * mi, m * mi);
            if (!_backward)
            {
                b.Mlp(b._eGate[x], b._eUp[x], b._eDown[x], gx, g, u, h, b._eOut.AsSpan(first * d, m * d), m);
                return;
            }
            b.MlpBackward(b._eGate[x], b._eUp[x], b._eDown[x], gx, g, u, h, s.EOut.AsSpan(first * d, m * d), s.GX.AsSpan(first * d, m * d),
                s.EG.AsSpan(first * mi, m * mi), s.EU.AsSpan(first * mi, m * mi), s.EH.AsSpan(first * mi, m * mi), m);
        }
    }
}
