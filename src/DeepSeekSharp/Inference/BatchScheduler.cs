using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using DeepSeekSharp.Model;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;

namespace DeepSeekSharp.Inference;

/// <summary>Limits of a <see cref="BatchScheduler"/>. Latent-cache memory is MaxBatch × ContextLength positions,
/// allocated once; requests beyond MaxBatch wait in a queue of MaxQueue, and beyond that are refused.</summary>
public sealed record BatchOptions
{
    /// <summary>Sequences decoded together in one forward pass.</summary>
    public int MaxBatch { get; init; } = 8;
    /// <summary>Positions each sequence's latent cache holds (prompt + reply).</summary>
    public int? ContextLength { get; init; }
    /// <summary>Requests that may wait for a free sequence slot.</summary>
    public int MaxQueue { get; init; } = 64;
    /// <summary>Most prompt tokens prefilled per step (over all new requests), so running streams never stall for
    /// long behind a long prompt.</summary>
    public int PrefillChunk { get; init; } = 256;
    /// <summary>Prompt prefixes computed before, shared by every sequence (null: none).</summary>
    public PrefixCache? PrefixCache { get; init; }
}

/// <summary>The request queue is full, or the engine is draining for shutdown: retry later (elsewhere).</summary>
public sealed class EngineBusyException(string message) : Exception(message);

/// <summary>A sequence was ended before it finished because the engine is shutting down.</summary>
public sealed class EngineShutdownException(string message) : Exception(message);

/// <summary>Continuous batching: one engine thread owns the model; requests join the running batch between decode
/// steps and leave when done, so concurrent requests share each forward pass (one weight read serves every active
/// sequence). Long prompts are prefilled in chunks beside the running decodes. Each sequence owns a latent cache
/// slot. A sequence's arithmetic never depends on its neighbours, so results are the same alone or batched.</summary>
public sealed class BatchScheduler : IGenerationEngine, IDisposable
{
    private sealed class Request(int[] prompt, bool startsInReasoning, GenerationOptions options, CancellationToken cancel)
    {
        public readonly int[] Prompt = prompt;
        public readonly bool StartsInReasoning = startsInReasoning;
        public readonly GenerationOptions Options = options;
        public readonly CancellationToken Cancel = cancel;
        public readonly Channel<GenerationUpdate> Output = Channel.CreateUnbounded<GenerationUpdate>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        public readonly Stopwatch Clock = Stopwatch.StartNew();
        public LinkedListNode<Request>? Node;          // its place in the queue while it waits (under the queue's lock)
        public CancellationTokenRegistration LeaveQueue; // takes it out of the queue the moment its caller gives up
    }

    private sealed class Slot(LatentKvCache cache, LatentKvCache? mtpCache, int dim)
    {
        public readonly LatentKvCache Cache = cache;
        public Request? Request;
        public ReplyStream? Reply;
        public int Prefilled;      // prompt tokens already in the cache
        public int Next;           // the token to feed next (decoding)
        public int RowsThisStep;   // prompt tokens this step prefills (0 = decoding)
        public bool Decoding => Request is not null && Prefilled == Request.Prompt.Length;

        // MTP speculation (see Speculator): the module's cache runs one step behind the main one; hidden rows whose
        // next token is not known yet wait here.
        public readonly LatentKvCache? MtpCache = mtpCache;
        public readonly float[] Waiting = mtpCache is null ? [] : new float[2 * dim];
        public int WaitingRows;
        public bool Speculating;   // this request drafts with the MTP module
        public bool Verifying;     // this step runs [Next, Draft]
        public int Draft;
        public int LogitOffset;    // where this step's logits for the slot start (rows)
    }

    private readonly LinkedList<Request> _queue = new();   // waiting requests, oldest first; lock on it
    private readonly SemaphoreSlim _wake = new(0);           // released on every arrival (and on abort), so an idle loop wakes
    private readonly Slot[] _slots;
    private readonly RunState _state;
    private readonly BatchOptions _options;
    private readonly Thread _thread;
    private readonly CancellationTokenSource _stop = new();
    private long _requests, _tokens;
    private double _decodeTokensPerSecond;
    private volatile bool _draining;
    private volatile Exception? _abort;   // set by AbortAll: the loop ends every sequence with it
    private readonly MtpBatch _mtp;

    public BatchScheduler(DeepSeekModel model, Tokenizer tokenizer, BatchOptions? options = null)
    {
        _options = options ??= new BatchOptions();
        if (options.MaxBatch < 1) throw new ArgumentOutOfRangeException(nameof(options), options.MaxBatch, "MaxBatch must be ≥ 1");
        if (options.PrefillChunk < 1) throw new ArgumentOutOfRangeException(nameof(options), options.PrefillChunk, "PrefillChunk must be ≥ 1");
        Model = model;
        Tokenizer = tokenizer;
        Template = GenerationEngineExtensions.TemplateFor(model, tokenizer);
        ContextLength = options.ContextLength ?? model.DefaultCapacity;
        if (ContextLength < 2 || ContextLength > model.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(options), ContextLength, $"context length must be in [2, max_position_embeddings = {model.Config.MaxPositionEmbeddings}]");
        ModelConfig c = model.Config;
        _slots = Enumerable.Range(0, options.MaxBatch).Select(_ => new Slot(new LatentKvCache(c.NLayers, c.LatentCacheWidth, ContextLength, model.CacheFormat),
            model.MtpLayers > 0 ? new LatentKvCache(model.MtpLayers, c.LatentCacheWidth, ContextLength, model.CacheFormat) : null, c.Dim)).ToArray();
        _state = new RunState(c, ContextLength);
        _mtp = new MtpBatch(c, options.MaxBatch, options.PrefillChunk);
        model.PreparePoolThreads(options.MaxBatch);
        _thread = new Thread(Loop) { IsBackground = true, Name = "dss-engine" };
        _thread.Start();
    }

    public DeepSeekModel Model { get; }
    public Tokenizer Tokenizer { get; }
    public ChatTemplate? Template { get; }
    public int ContextLength { get; }
    public int MaxBatch => _options.MaxBatch;
    public PrefixCache? PrefixCache => _options.PrefixCache;
    /// <summary>Whether requests asking for <see cref="Speculation.Mtp"/> get it (the model has an MTP module).</summary>
    public bool CanSpeculate => Model.MtpLayers > 0;
    /// <summary>Bytes of latent cache allocated for all slots.</summary>
    public long CacheBytes => _slots.Sum(s => s.Cache.BytesPerToken * s.Cache.Capacity);
    public int ActiveSequences => _slots.Count(s => s.Request is not null);
    public long QueueDepth { get { lock (_queue) return _queue.Count; } }
    /// <summary>True after <see cref="BeginDrain"/>: new requests are refused, running ones continue.</summary>
    public bool Draining => _draining;
    public long RequestsTotal => Interlocked.Read(ref _requests);
    public long TokensGenerated => Interlocked.Read(ref _tokens);
    /// <summary>Tokens per second over the last decode step (all sequences together).</summary>
    public double DecodeTokensPerSecond => Volatile.Read(ref _decodeTokensPerSecond);

    public async IAsyncEnumerable<GenerationUpdate> GenerateAsync(int[] promptIds, bool startsInReasoning, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        ReplyStream.Validate(promptIds, options, Model.Config.VocabSize, ContextLength);
        var request = new Request(promptIds, startsInReasoning, options, cancellationToken);
        lock (_queue)
        {
            if (_draining) throw new EngineBusyException("the engine is shutting down and takes no new requests");
            if (_queue.Count >= Math.Max(_options.MaxQueue, 1))
                throw new EngineBusyException($"the engine is at capacity: {MaxBatch} sequences running and {_options.MaxQueue} waiting; retry later");
            request.Node = _queue.AddLast(request);
        }
        // A caller that gives up while waiting leaves the queue at once, so it never holds a place nobody uses.
        request.LeaveQueue = cancellationToken.Register(() => Withdraw(request));
        Interlocked.Increment(ref _requests);
        _wake.Release();
        try
        {
            await foreach (GenerationUpdate u in request.Output.Reader.ReadAllAsync(CancellationToken.None))
            {
                yield return u;
            }
        }
        finally
        {
            request.LeaveQueue.Dispose();
        }
        cancellationToken.ThrowIfCancellationRequested();
    }

    private void Withdraw(Request r)
    {
        lock (_queue)
        {
            if (r.Node?.List is null) return; // already admitted (the loop sees the cancellation) or gone
            _queue.Remove(r.Node);
            r.Node = null;
        }
        r.Output.Writer.TryComplete();
    }

    private Request? Dequeue()
    {
        lock (_queue)
        {
            if (_queue.First is not { } first) return null;
            _queue.RemoveFirst();
            first.Value.Node = null;
            return first.Value;
        }
    }

    /// <summary>Stops taking requests (they get <see cref="EngineBusyException"/>); queued and running ones go on.</summary>
    public void BeginDrain() { lock (_queue) _draining = true; }

    private bool Busy => ActiveSequences > 0 || QueueDepth > 0;

    /// <summary>Completes when no sequence runs or waits, or when <paramref name="cancellationToken"/> fires.</summary>
    public async Task WhenIdleAsync(CancellationToken cancellationToken = default)
    {
        while (Busy) await Task.Delay(20, cancellationToken);
    }

    /// <summary>Ends every running and waiting sequence now with <paramref name="reason"/> (their readers see it
    /// thrown) and returns when they are all ended.</summary>
    public async Task AbortAllAsync(EngineShutdownException reason)
    {
        _abort = reason;
        _wake.Release();
        while (Busy && _thread.IsAlive) await Task.Delay(10);
    }

    private void Loop()
    {
        var tokens = new List<int>();
        var slices = new List<SequenceSlice>();
        var stepSlots = new List<Slot>();
        var updates = new List<GenerationUpdate>();
        float[] logits = new float[2 * _slots.Length * Model.Config.VocabSize]; // two rows per verifying sequence
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                if (_abort is { } reason) EndAll(reason);
                if (!Busy)
                {
                    _wake.Wait(_stop.Token); // idle: sleep until a request (or an abort) arrives
                    continue;
                }
                Admit();
                BuildStep(tokens, slices, stepSlots);
                if (slices.Count == 0) continue;
                var clock = Stopwatch.StartNew();
                Model.Transformer.Forward(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(tokens),
                    System.Runtime.InteropServices.CollectionsMarshal.AsSpan(slices), _state, AttentionMode.Auto, allPositions: false, observer: null, logits);
                int decoded = 0, vocab = Model.Config.VocabSize;
                _mtp.Clear();
                for (int i = 0; i < stepSlots.Count; i++)
                {
                    Slot slot = stepSlots[i];
                    SequenceSlice slice = slices[i];
                    slot.Prefilled += slot.RowsThisStep;
                    if (slot.RowsThisStep > 0 && slot.Decoding) // the prompt is in: share its blocks
                        _options.PrefixCache?.Store(slot.Request!.Prompt, slot.Prefilled, slot.Cache, null);
                    bool wasVerifying = slot.Verifying;
                    if (slot.Decoding)
                        decoded += wasVerifying
                            ? Verify(slot, logits.AsSpan(slot.LogitOffset * vocab, 2 * vocab), updates)
                            : Sample(slot, logits.AsSpan(slot.LogitOffset * vocab, vocab), updates);
                    // The rows whose next token is now known go through the MTP module; a decoding slot's last one drafts.
                    if (slot.Request is not null && slot.Speculating) _mtp.Add(slot, slice, _state.Hidden, slot.RowsThisStep > 0, wasVerifying);
                }
                if (_mtp.Rows > 0)
                {
                    _mtp.Run(Model, _state);
                    if (_options.PrefixCache is { } shared) // blocks of prompts finished this step get their MTP rows
                        foreach (Slot slot in stepSlots)
                            if (slot.Request is not null && slot.Speculating && slot.RowsThisStep > 0 && slot.Decoding)
                                shared.Store(slot.Request.Prompt, slot.Prefilled, slot.Cache, slot.MtpCache);
                }
                if (decoded > 0) Volatile.Write(ref _decodeTokensPerSecond, decoded / Math.Max(clock.Elapsed.TotalSeconds, 1e-9));
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                // A failed step fails the requests in it; the engine keeps serving the rest.
                foreach (Slot s in _slots.Where(s => s.Request is not null)) Release(s, e);
            }
        }
    }

    private void Admit()
    {
        foreach (Slot slot in _slots)
        {
            if (slot.Request is not null) continue;
            Request? r;
            do
            {
                if ((r = Dequeue()) is null) return;
                if (r.Cancel.IsCancellationRequested) { r.Output.Writer.TryComplete(); r = null; }
            } while (r is null);
            slot.Request = r;
            slot.Cache.Clear();
            slot.MtpCache?.Clear();
            slot.WaitingRows = 0;
            slot.Speculating = r.Options.Speculation == Speculation.Mtp && slot.MtpCache is not null;
            slot.Verifying = false;
            slot.Prefilled = 0;
            slot.Reply = new ReplyStream(Tokenizer, Model.Config.EosTokenId, Model.Config.VocabSize, r.Prompt, r.StartsInReasoning, r.Options, ContextLength, r.Clock);
            if (_options.PrefixCache is { } shared)
            {
                // The last prompt token is always run (its logits start the reply). A speculating sequence restores the
                // MTP rows too, one position behind, and reruns the last restored position for the hidden state the
                // module needs next.
                int restored = shared.Restore(r.Prompt, r.Prompt.Length - 1, slot.Cache, slot.Speculating ? slot.MtpCache : null);
                if (slot.Speculating && restored > 0) slot.Cache.Truncate(--restored);
                slot.Prefilled = restored;
                slot.Reply.CachedPromptTokens = restored;
            }
        }
    }

    /// <summary>One row per decoding sequence, and prompt chunks for new ones within the prefill budget.</summary>
    private void BuildStep(List<int> tokens, List<SequenceSlice> slices, List<Slot> stepSlots)
    {
        tokens.Clear();
        slices.Clear();
        stepSlots.Clear();
        int budget = _options.PrefillChunk, logitRows = 0;
        foreach (Slot slot in _slots)
        {
            if (slot.Request is not { } r) continue;
            if (r.Cancel.IsCancellationRequested) { Release(slot, null); continue; }
            int count;
            slot.Verifying = false;
            if (slot.Decoding)
            {
                // Speculation needs room for the draft; near the end of the context the slot decodes plainly.
                if (slot.Speculating && slot.Cache.Length + 2 > slot.Cache.Capacity) slot.Speculating = false;
                slot.Verifying = slot.Speculating;
                tokens.Add(slot.Next);
                if (slot.Verifying) tokens.Add(slot.Draft);
                count = slot.Verifying ? 2 : 1;
                slot.RowsThisStep = 0;
            }
            else
            {
                count = Math.Min(r.Prompt.Length - slot.Prefilled, budget);
                if (count == 0) continue;
                budget -= count;
                tokens.AddRange(r.Prompt.AsSpan(slot.Prefilled, count));
                slot.RowsThisStep = count;
            }
            slot.LogitOffset = logitRows;
            logitRows += slot.Verifying ? 2 : 1;
            slices.Add(new SequenceSlice(slot.Cache, tokens.Count - count, count, Decoding: slot.Decoding, LogitRows: slot.Verifying ? 2 : 1));
            stepSlots.Add(slot);
        }
    }

    /// <summary>Samples the slot's next token; returns 1 (tokens produced).</summary>
    private int Sample(Slot slot, ReadOnlySpan<float> logits, List<GenerationUpdate> updates)
    {
        int next = slot.Reply!.Next(logits);
        if (Emit(slot, next, updates)) slot.Next = next;
        return 1;
    }

    /// <summary>The slot ran [Next, Draft]: the token at the draft's place (the draft if the sampler accepts it) and,
    /// when accepted, the token after it (as <see cref="Generator"/> does). Returns the tokens produced.</summary>
    private int Verify(Slot slot, ReadOnlySpan<float> logits, List<GenerationUpdate> updates)
    {
        ReplyStream reply = slot.Reply!;
        int vocab = Model.Config.VocabSize;
        int token = reply.Next(logits[..vocab], slot.Draft, out bool accepted);
        reply.DraftTokens++;
        if (!accepted)
        {
            slot.Cache.Truncate(slot.Cache.Length - 1);
            slot.WaitingRows = 1; // the draft's hidden row is void
            if (Emit(slot, token, updates)) slot.Next = token;
            return 1;
        }
        reply.AcceptedDraftTokens++;
        slot.WaitingRows = 2;
        if (!Emit(slot, token, updates)) return 1;
        int after = reply.Next(logits[vocab..]);
        if (Emit(slot, after, updates)) slot.Next = after;
        return 2;
    }

    /// <summary>Gives a token to the slot's reply and its caller; false when that finished the reply (the slot is
    /// released).</summary>
    private bool Emit(Slot slot, int token, List<GenerationUpdate> updates)
    {
        ReplyStream reply = slot.Reply!;
        updates.Clear();
        reply.OnToken(token, updates);
        Interlocked.Increment(ref _tokens);
        foreach (GenerationUpdate u in updates) slot.Request!.Output.Writer.TryWrite(u);
        if (!reply.Finished) return true;
        updates.Clear();
        reply.Complete(updates);
        foreach (GenerationUpdate u in updates) slot.Request!.Output.Writer.TryWrite(u);
        Release(slot, null);
        return false;
    }

    /// <summary>One step's rows for the MTP module, over every speculating sequence: the hidden rows whose next token
    /// became known this step (prompt rows, the verified token and an accepted draft), each sequence's rows continuing
    /// its MTP cache; the last row of a decoding sequence gives its next draft.</summary>
    private sealed class MtpBatch(ModelConfig c, int maxBatch, int prefillChunk)
    {
        private readonly List<int> _tokens = new(3 * maxBatch + prefillChunk);
        private readonly float[] _hidden = new float[(3 * maxBatch + prefillChunk) * c.Dim];
        private readonly List<SequenceSlice> _slices = new(maxBatch);
        private readonly List<Slot?> _drafting = new(maxBatch); // per slice: the slot it drafts for, or null
        private readonly float[] _logits = new float[maxBatch * c.VocabSize];

        public int Rows => _tokens.Count;

        public void Clear()
        {
            _tokens.Clear();
            _slices.Clear();
            _drafting.Clear();
        }

        /// <param name="slice">the slot's rows in this step's main pass</param>
        /// <param name="hidden">the main pass's final hidden states [rows, dim]</param>
        public void Add(Slot slot, SequenceSlice slice, ReadOnlySpan<float> hidden, bool prefilled, bool verified)
        {
            int d = c.Dim, start = _tokens.Count;
            if (prefilled)
            {
                int[] prompt = slot.Request!.Prompt;
                int first = slot.Prefilled - slice.Count; // the chunk's first position
                if (slot.WaitingRows == 1) Row(slot.Waiting.AsSpan(0, d), prompt[first]);
                bool done = slot.Decoding; // its first token was sampled: every row's next token is known
                int known = done ? slice.Count : slice.Count - 1;
                for (int r = 0; r < known; r++)
                    Row(hidden.Slice((slice.Start + r) * d, d), first + r + 1 < prompt.Length ? prompt[first + r + 1] : slot.Next);
                if (!done) hidden.Slice((slice.Start + slice.Count - 1) * d, d).CopyTo(slot.Waiting);
                slot.WaitingRows = done ? 0 : 1;
                Close(slot, start, decoding: false, drafts: done);
                return;
            }
            if (!verified) return;
            // Accepted: the verified token's and the draft's rows (next tokens: the draft, then the new Next);
            // rejected: only the verified token's row (next token: the new Next).
            if (slot.WaitingRows == 2) Row(hidden.Slice(slice.Start * d, d), slot.Draft);
            Row(hidden.Slice((slice.Start + slot.WaitingRows - 1) * d, d), slot.Next);
            slot.WaitingRows = 0;
            Close(slot, start, decoding: true, drafts: true);
        }

        private void Row(ReadOnlySpan<float> h, int nextToken)
        {
            h.CopyTo(_hidden.AsSpan(_tokens.Count * c.Dim, c.Dim));
            _tokens.Add(nextToken);
        }

        private void Close(Slot slot, int start, bool decoding, bool drafts)
        {
            if (_tokens.Count == start) return;
            _slices.Add(new SequenceSlice(slot.MtpCache!, start, _tokens.Count - start, Decoding: decoding));
            _drafting.Add(drafts ? slot : null);
        }

        public void Run(DeepSeekModel model, RunState state)
        {
            int n = _tokens.Count, vocab = c.VocabSize;
            model.Transformer.ForwardMtp(0, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_tokens), _hidden.AsSpan(0, n * c.Dim),
                System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_slices), state, AttentionMode.Auto, _logits);
            for (int i = 0; i < _slices.Count; i++)
                if (_drafting[i] is { } slot) slot.Draft = DeepSeekSharp.Kernels.TopK.ArgMax(_logits.AsSpan(i * vocab, vocab));
        }
    }

    /// <summary>Ends a slot's request (normally, cancelled, or with an error) and frees its cache.</summary>
    private static void Release(Slot slot, Exception? error)
    {
        slot.Request?.Output.Writer.TryComplete(error);
        slot.Request = null;
        slot.Reply = null;
        slot.Cache.Clear();
        slot.MtpCache?.Clear();
        slot.Speculating = slot.Verifying = false;
    }

    /// <summary>Ends every running and queued request with <paramref name="reason"/> (on the engine thread, or after it
    /// has stopped).</summary>
    private void EndAll(Exception reason)
    {
        foreach (Slot s in _slots) if (s.Request is not null) Release(s, reason);
        while (Dequeue() is { } r) r.Output.Writer.TryComplete(reason);
    }

    public void Dispose()
    {
        lock (_queue) _draining = true;
        _stop.Cancel();
        _thread.Join(TimeSpan.FromSeconds(10));
        EndAll(new ObjectDisposedException(nameof(BatchScheduler)));
    }
}
