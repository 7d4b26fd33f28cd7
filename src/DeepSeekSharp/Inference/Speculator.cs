using DeepSeekSharp.Model;

namespace DeepSeekSharp.Inference;

/// <summary>MTP speculation for one session. DeepSeek-V3's MTP module at position i combines the main model's final
/// hidden state at i with the embedding of token i + 1 and predicts token i + 2; its own latent cache holds one row
/// per position. This class keeps that cache one step behind the main one: the hidden rows whose next token is not
/// yet known wait here until it is, then go through the module — over the prompt as it is prefilled, and during
/// decoding one or more rows a step, whose last row's logits are the first draft.
/// <para>More drafts chain the module on its own output (as vLLM runs one MTP module for several speculative
/// tokens): draft j + 1 comes from the module's block output at draft j's step and the embedding of draft j. Those
/// chained rows leave the MTP cache as soon as the drafts are made; the cache only ever holds rows computed from the
/// main model's hidden states and accepted tokens.</para>
/// <para>A decoding step: the sampled token t and its drafts run through the main model together (absorbed
/// attention, as a single decode step runs, so each row's logits are bit-identical to running it alone); the logits
/// at each row decide the next draft's place, those at the last draft the token after it. Rejected drafts leave the
/// main cache by truncation.</para>
/// <para>On a model without an MTP module the mechanics still run (benchmarks draft a known continuation) and the
/// module's drafts are 0.</para></summary>
internal sealed class Speculator
{
    /// <summary>Most drafts one pass verifies.</summary>
    public const int MaxDrafts = 8;

    private readonly InferenceSession _session;
    private readonly int _dim;
    private readonly float[] _hidden;      // [MaxDrafts + 1, dim] hidden rows of positions MtpCache.Length .. Position - 1
    private readonly float[] _chained;     // [dim] the module's block output that the next chained draft starts from
    private readonly float[] _mtpLogits;   // [vocab]
    private readonly float[] _verify;      // [MaxDrafts + 1, vocab]
    private readonly int[] _tokens = new int[MaxDrafts + 1];
    private readonly bool _hasMtp;
    private int _waiting;                  // rows of _hidden in use

    public Speculator(InferenceSession session)
    {
        _session = session;
        _hasMtp = session.HasMtp;
        _dim = session.Config.Dim;
        int vocab = session.Config.VocabSize;
        _hidden = new float[(MaxDrafts + 1) * _dim];
        _chained = new float[_dim];
        _mtpLogits = new float[vocab];
        _verify = new float[(MaxDrafts + 1) * vocab];
    }

    private LatentKvCache MtpCache => _session.MtpCache!;

    /// <summary>Before a prefill that keeps <paramref name="common"/> cached positions: MTP rows stay valid only while
    /// their next token is in the kept prefix. Returns how many main-cache positions to keep: all of them when the
    /// MTP cache need not follow (no speculation this time), else as many as the MTP cache covers, so the prefill
    /// recomputes the hidden states the module still needs.</summary>
    public int KeepPrefix(int common, bool catchUp)
    {
        _waiting = 0;
        if (!_hasMtp) return common;
        int keep = Math.Min(MtpCache.Length, Math.Max(0, common - 1));
        MtpCache.Truncate(keep);
        return catchUp ? keep : common;
    }

    /// <summary>After the main model ran <paramref name="part"/> (the last rows of its cache): the MTP module takes
    /// every row whose next token is now known; the last row waits for the next token.</summary>
    public void Prefilled(ReadOnlySpan<int> part)
    {
        if (!_hasMtp) return;
        int n = part.Length;
        if (_waiting == 1)
        {
            _tokens[0] = part[0];
            _session.ForwardMtp(_tokens.AsSpan(0, 1), _hidden.AsSpan(0, _dim), _mtpLogits, allPositions: false);
        }
        ReadOnlySpan<float> hidden = _session.LastHidden; // the MTP pass never writes the main model's hidden states
        if (n > 1) _session.ForwardMtp(part[1..], hidden[..((n - 1) * _dim)], _mtpLogits, allPositions: false);
        hidden.Slice((n - 1) * _dim, _dim).CopyTo(_hidden);
        _waiting = 1;
    }

    /// <summary>Fills <paramref name="drafts"/> with the MTP module's drafts of the tokens after
    /// <paramref name="next"/> (sampled, not yet run), each chained on the one before it.</summary>
    /// <param name="cached">the tokens in the main cache</param>
    /// <param name="choose">if set, replaces each draft (given the position it is for and the module's draft, 0
    /// without a module) before the next one is drafted from it</param>
    public void Draft(List<int> cached, int next, Span<int> drafts, Func<int, int, int>? choose = null)
    {
        if (drafts.Length is 0 or > MaxDrafts) throw new ArgumentOutOfRangeException(nameof(drafts), drafts.Length, $"1 to {MaxDrafts} drafts a pass");
        int position = _session.Position; // next's
        if (!_hasMtp)
        {
            for (int j = 0; j < drafts.Length; j++) drafts[j] = choose?.Invoke(position + 1 + j, 0) ?? 0;
            return;
        }
        int waiting = _waiting;
        for (int i = 0; i + 1 < waiting; i++) _tokens[i] = cached[cached.Count - waiting + 1 + i];
        _tokens[waiting - 1] = next;
        _session.ForwardMtp(_tokens.AsSpan(0, waiting), _hidden.AsSpan(0, waiting * _dim), _mtpLogits, allPositions: false, decoding: true);
        _waiting = 0;
        int kept = MtpCache.Length; // every row from the main model's hidden states and accepted tokens
        for (int j = 0; ; j++)
        {
            int draft = DeepSeekSharp.Kernels.TopK.ArgMax(_mtpLogits);
            drafts[j] = choose is null ? draft : choose(position + 1 + j, draft);
            if (j + 1 == drafts.Length) break;
            _session.LastMtpHidden[^_dim..].CopyTo(_chained);
            _tokens[0] = drafts[j];
            _session.ForwardMtp(_tokens.AsSpan(0, 1), _chained, _mtpLogits, allPositions: false, decoding: true);
        }
        MtpCache.Truncate(kept);
    }

    /// <summary>Runs <paramref name="tokens"/> (the next token, then its drafts) through the main model; returns their
    /// logits [tokens, vocab]. Every row's hidden state then waits for the module.</summary>
    public ReadOnlySpan<float> Verify(ReadOnlySpan<int> tokens)
    {
        int n = tokens.Length;
        Span<float> logits = _verify.AsSpan(0, n * _session.Config.VocabSize);
        _session.Forward(tokens, logits, decoding: true);
        _session.LastHidden.CopyTo(_hidden);
        _waiting = n;
        return logits;
    }

    /// <summary>The first <paramref name="accepted"/> drafts of the last <see cref="Verify"/> were kept and the rest
    /// truncated from the main cache: the hidden rows of the next token and the kept drafts wait for the module.</summary>
    public void Accepted(int accepted) => _waiting = 1 + accepted;
}
