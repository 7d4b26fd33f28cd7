using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text.Json;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Model;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;

namespace DeepSeekSharp.Inference;

/// <summary>Text in, streamed text out: chat template → tokenizer → prefill → decode loop → sampler → streaming
/// detokenizer → stop strings → reasoning parser. Owns one sequence; its cache is reused across calls for the
/// prompt prefix they share (a multi-turn chat re-reads only the new turn). One generation at a time.</summary>
public sealed class Generator : IGenerationEngine, IDisposable
{
    private readonly InferenceSession _session;
    private readonly List<int> _cached = [];   // token ids whose latents are in the session's cache
    private readonly float[] _logits;          // [vocab] the next token's logits
    private readonly int[] _one = new int[1];  // the decode step's input, reused so a step allocates nothing
    private readonly int[] _pass = new int[1 + Speculator.MaxDrafts]; // a speculative pass's input
    private readonly Speculator? _speculator;  // null when the model has no MTP module
    private int _busy;

    public Generator(DeepSeekModel model, Tokenizer tokenizer, int? contextLength = null)
    {
        Model = model;
        Tokenizer = tokenizer;
        Template = GenerationEngineExtensions.TemplateFor(model, tokenizer);
        _session = model.CreateSession(contextLength);
        _logits = new float[model.Config.VocabSize];
        if (_session.HasMtp) _speculator = new Speculator(_session);
    }

    /// <summary>Loads a Hugging Face folder holding both the model and its tokenizer files.</summary>
    public static Generator Load(string path, int? contextLength = null) =>
        new(DeepSeekModel.Load(path), Tokenizer.Load(path), contextLength);

    public DeepSeekModel Model { get; }
    public Tokenizer Tokenizer { get; }
    public ChatTemplate? Template { get; }
    public int ContextLength => _session.Capacity;
    /// <summary>Whether <see cref="Speculation.Mtp"/> takes effect (the model has an MTP module).</summary>
    public bool CanSpeculate => _speculator is not null;

    /// <summary>For benchmarks: replaces each MTP draft (given the position it is for and the module's draft) before it
    /// is chained on and verified, e.g. by a known continuation, to measure speculation at a chosen acceptance rate.</summary>
    public Func<int, int, int>? DraftOverride { get; set; }

    /// <summary>Prompt prefixes shared with other generators or kept across runs (null: only this generator's own
    /// last sequence is reused).</summary>
    public PrefixCache? PrefixCache { get; set; }

    /// <summary>For tests: the session whose caches this generator fills.</summary>
    internal InferenceSession Session => _session;

    /// <summary>For tests: sees every generated token id in order.</summary>
    internal Action<int>? TokenObserver { get; set; }

    private void Emit(ReplyStream reply, int token, List<GenerationUpdate> output)
    {
        TokenObserver?.Invoke(token);
        reply.OnToken(token, output);
    }

    /// <summary>R1 templates end the prompt inside an open think block (or in reasoning continued from a prefix): the
    /// last <c>&lt;think&gt;</c> is not closed and no special marker (<c>&lt;｜…｜&gt;</c>) follows it.</summary>
    public static bool PromptEndsInReasoning(string prompt)
    {
        int open = prompt.LastIndexOf(ReasoningParser.OpenTag, StringComparison.Ordinal);
        return open >= 0 && prompt.IndexOf(ReasoningParser.CloseTag, open, StringComparison.Ordinal) < 0
            && prompt.IndexOf("<｜", open, StringComparison.Ordinal) < 0;
    }

    public async IAsyncEnumerable<GenerationUpdate> GenerateAsync(int[] promptIds, bool startsInReasoning, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        ReplyStream.Validate(promptIds, options, Model.Config.VocabSize, ContextLength);
        if (Interlocked.Exchange(ref _busy, 1) == 1) throw new InvalidOperationException("this generator is already generating");
        try
        {
            await Task.Yield(); // the caller gets control back; the loop below runs on the thread pool
            var reply = new ReplyStream(Tokenizer, Model.Config.EosTokenId, Model.Config.VocabSize, promptIds, startsInReasoning, options, ContextLength);
            Speculator? speculator = options.Speculation == Speculation.Mtp ? _speculator : null;
            reply.CachedPromptTokens = Prefill(promptIds, speculator, cancellationToken);
            var pending = new List<GenerationUpdate>();
            int next = reply.Next(_logits);
            Emit(reply, next, pending);
            while (true)
            {
                foreach (GenerationUpdate u in pending) yield return u;
                pending.Clear();
                if (reply.Finished) break;
                cancellationToken.ThrowIfCancellationRequested();
                // Drafts need room in the context, and are worth verifying only while the reply may take them.
                int drafts = Math.Min(options.SpeculativeTokens, Math.Min(_session.Capacity - _session.Position, reply.MaxTokens - reply.Generated) - 1);
                if (speculator is not null && drafts > 0)
                {
                    next = SpeculativeStep(speculator, next, drafts, reply, pending);
                    continue;
                }
                speculator = null; // a plain step leaves the MTP cache behind; Prefill catches it up next time
                Step(next);
                next = reply.Next(_logits);
                Emit(reply, next, pending);
            }
            reply.Complete(pending);
            foreach (GenerationUpdate u in pending) yield return u;
        }
        finally
        {
            _session.Cache.Truncate(Math.Min(_session.Position, _cached.Count)); // a draft the reply ended before
            PrefixCache?.Store(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_cached), _cached.Count, _session.Cache, _session.MtpCache);
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>Feeds <paramref name="next"/> (sampled, not yet run) and the MTP module's <paramref name="drafts"/>
    /// drafts of the tokens after it in one pass; emits, in order, each draft the sampler accepts at its place, then
    /// the token sampled where the first rejected draft was (or after the last draft when all are accepted). Returns
    /// the last emitted token, the next one to run.</summary>
    private int SpeculativeStep(Speculator speculator, int next, int drafts, ReplyStream reply, List<GenerationUpdate> output)
    {
        Span<int> pass = _pass.AsSpan(0, 1 + drafts);
        pass[0] = next;
        speculator.Draft(_cached, next, pass[1..], DraftOverride);
        ReadOnlySpan<float> logits = speculator.Verify(pass);
        int vocab = _logits.Length;
        _cached.Add(next);
        reply.DraftTokens += drafts;
        for (int j = 1; j <= drafts; j++)
        {
            int token = reply.Next(logits.Slice((j - 1) * vocab, vocab), pass[j], out bool accepted);
            if (!accepted)
            {
                _session.Cache.Truncate(_cached.Count);
                speculator.Accepted(j - 1);
                Emit(reply, token, output);
                return token;
            }
            reply.AcceptedDraftTokens++;
            _cached.Add(pass[j]);
            Emit(reply, pass[j], output);
            if (reply.Finished) return pass[j]; // the rows after it leave the cache when the generation ends
        }
        logits.Slice(drafts * vocab, vocab).CopyTo(_logits);
        int after = reply.Next(_logits);
        Emit(reply, after, output);
        return after;
    }

    /// <summary>Runs the prompt through the model, reusing the cached prefix it shares with the last sequence or, when
    /// longer, one from the <see cref="PrefixCache"/>; with a speculator, also through the MTP module so its cache
    /// covers the prompt. Returns the prompt positions not recomputed.</summary>
    private int Prefill(int[] promptIds, Speculator? speculator, CancellationToken cancellationToken)
    {
        int common = 0;
        while (common < _cached.Count && common < promptIds.Length - 1 && _cached[common] == promptIds[common]) common++;
        if (PrefixCache is { } shared && shared.Probe(promptIds, promptIds.Length - 1, needMtp: speculator is not null) is var hit && hit > common)
        {
            Reset();
            common = shared.Restore(promptIds, hit, _session.Cache, speculator is not null ? _session.MtpCache : null);
            _cached.AddRange(promptIds.AsSpan(0, common));
        }
        if (_speculator is not null) common = _speculator.KeepPrefix(common, catchUp: speculator is not null);
        _session.Cache.Truncate(common);
        _cached.RemoveRange(common, _cached.Count - common);
        int reused = common;
        const int chunk = 512; // bounds scratch memory; also where cancellation is checked
        for (int start = common; start < promptIds.Length; start += chunk)
        {
            cancellationToken.ThrowIfCancellationRequested();
            ReadOnlySpan<int> part = promptIds.AsSpan(start, Math.Min(chunk, promptIds.Length - start));
            _session.Forward(part, _logits, allPositions: false);
            _cached.AddRange(part);
            speculator?.Prefilled(part);
        }
        return reused;
    }

    private void Step(int token)
    {
        _one[0] = token;
        _session.Forward(_one, _logits);
        _cached.Add(token);
    }

    /// <summary>Forgets the cached sequence.</summary>
    public void Reset()
    {
        _session.Reset();
        _cached.Clear();
    }

    public void Dispose() => _session.Dispose();
}
