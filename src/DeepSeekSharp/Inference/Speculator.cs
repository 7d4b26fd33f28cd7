using DeepSeekSharp.Model;

namespace DeepSeekSharp.Inference;

/// <summary>MTP speculation for one session. DeepSeek-V3's MTP module at position i combines the main model's final
/// hidden state at i with the embedding of token i + 1 and predicts token i + 2; its own latent cache holds one row
/// per position. This class keeps that cache one step behind the main one: the hidden rows whose next token is not
/// yet known wait here until it is, then go through the module — over the prompt as it is prefilled, and during
/// decoding one or two rows a step, whose last row's logits are the draft.
/// <para>A decoding step: the sampled token t and the draft d run through the main model together (absorbed
/// attention, as a single decode step runs, so each row's logits are bit-identical to running it alone); the logits
/// at t decide d's place, those at d the token after it. Rejected drafts leave the main cache by truncation; the
/// MTP cache only ever holds rows whose tokens were accepted.</para>
/// <para>On a model without an MTP module the mechanics still run (benchmarks draft a known continuation) and the
/// drafting does nothing.</para></summary>
internal sealed class Speculator
{
    private readonly InferenceSession _session;
    private readonly int _dim;
    private readonly float[] _hidden;      // [2, dim] hidden rows of positions MtpCache.Length .. Position - 1
    private readonly float[] _mtpLogits;   // [vocab]
    private readonly float[] _verify;      // [2, vocab]
    private readonly int[] _tokens = new int[2];
    private readonly bool _hasMtp;
    private int _waiting;                  // rows of _hidden in use

    public Speculator(InferenceSession session)
    {
        _session = session;
        _hasMtp = session.HasMtp;
        _dim = session.Config.Dim;
        int vocab = session.Config.VocabSize;
        _hidden = new float[2 * _dim];
        _mtpLogits = new float[vocab];
        _verify = new float[2 * vocab];
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

    /// <summary>The MTP module's draft of the token after <paramref name="next"/> (sampled, not yet run); 0 without a
    /// module.</summary>
    /// <param name="cached">the tokens in the main cache</param>
    public int Draft(List<int> cached, int next)
    {
        if (!_hasMtp) return 0;
        if (_waiting == 2) _tokens[0] = cached[^1];
        _tokens[_waiting - 1] = next;
        _session.ForwardMtp(_tokens.AsSpan(0, _waiting), _hidden.AsSpan(0, _waiting * _dim), _mtpLogits, allPositions: false, decoding: true);
        _waiting = 0;
        return DeepSeekSharp.Kernels.TopK.ArgMax(_mtpLogits);
    }

    /// <summary>Runs <paramref name="next"/> and <paramref name="draft"/> through the main model; returns their
    /// logits [2, vocab]. Both rows' hidden states then wait for the module.</summary>
    public ReadOnlySpan<float> Verify(int next, int draft)
    {
        _tokens[0] = next;
        _tokens[1] = draft;
        _session.Forward(_tokens, _verify, decoding: true);
        _session.LastHidden.CopyTo(_hidden);
        _waiting = 2;
        return _verify;
    }

    /// <summary>The draft was rejected and truncated from the main cache: only the first row's hidden state waits.</summary>
    public void Rejected() => _waiting = 1;
}
