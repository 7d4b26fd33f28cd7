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

    private sealed class Slot(LatentKvCache cache)
    {
        public readonly LatentKvCache Cache = cache;
        public Request? Request;
        public ReplyStream? Reply;
        public int Prefilled;      // prompt tokens already in the cache
        public int Next;           // the token to feed next (decoding)
        public int RowsThisStep;   // prompt tokens this step prefills (0 = decoding one token)
        public bool Decoding => Request is not null && Prefilled == Request.Prompt.Length;
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
        _slots = Enumerable.Range(0, options.MaxBatch).Select(_ => new Slot(new LatentKvCache(c.NLayers, c.LatentCacheWidth, ContextLength))).ToArray();
        _state = new RunState(c, ContextLength);
        model.PreparePoolThreads(options.MaxBatch);
        _thread = new Thread(Loop) { IsBackground = true, Name = "dss-engine" };
        _thread.Start();
    }

    public DeepSeekModel Model { get; }
    public Tokenizer Tokenizer { get; }
    public ChatTemplate? Template { get; }
    public int ContextLength { get; }
    public int MaxBatch => _options.MaxBatch;
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
        float[] logits = new float[_slots.Length * Model.Config.VocabSize];
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
                int decoded = 0;
                for (int i = 0; i < stepSlots.Count; i++)
                {
                    Slot slot = stepSlots[i];
                    slot.Prefilled += slot.RowsThisStep;
                    if (!slot.Decoding) continue; // prompt not finished yet: these logits are not wanted
                    decoded++;
                    Sample(slot, logits.AsSpan(i * Model.Config.VocabSize, Model.Config.VocabSize), updates);
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
            slot.Prefilled = 0;
            slot.Reply = new ReplyStream(Tokenizer, Model.Config.EosTokenId, Model.Config.VocabSize, r.Prompt, r.StartsInReasoning, r.Options, ContextLength, r.Clock);
        }
    }

    /// <summary>One row per decoding sequence, and prompt chunks for new ones within the prefill budget.</summary>
    private void BuildStep(List<int> tokens, List<SequenceSlice> slices, List<Slot> stepSlots)
    {
        tokens.Clear();
        slices.Clear();
        stepSlots.Clear();
        int budget = _options.PrefillChunk;
        foreach (Slot slot in _slots)
        {
            if (slot.Request is not { } r) continue;
            if (r.Cancel.IsCancellationRequested) { Release(slot, null); continue; }
            int count;
            if (slot.Decoding)
            {
                tokens.Add(slot.Next);
                count = 1;
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
            slices.Add(new SequenceSlice(slot.Cache, tokens.Count - count, count));
            stepSlots.Add(slot);
        }
    }

    private void Sample(Slot slot, ReadOnlySpan<float> logits, List<GenerationUpdate> updates)
    {
        ReplyStream reply = slot.Reply!;
        int next = reply.Sampler.Sample(logits);
        updates.Clear();
        reply.OnToken(next, updates);
        Interlocked.Increment(ref _tokens);
        foreach (GenerationUpdate u in updates) slot.Request!.Output.Writer.TryWrite(u);
        if (reply.Finished)
        {
            updates.Clear();
            reply.Complete(updates);
            foreach (GenerationUpdate u in updates) slot.Request!.Output.Writer.TryWrite(u);
            Release(slot, null);
        }
        else slot.Next = next;
    }

    /// <summary>Ends a slot's request (normally, cancelled, or with an error) and frees its cache.</summary>
    private static void Release(Slot slot, Exception? error)
    {
        slot.Request?.Output.Writer.TryComplete(error);
        slot.Request = null;
        slot.Reply = null;
        slot.Cache.Clear();
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
