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
    private readonly float[] _logits;
    private readonly int[] _one = new int[1]; // the decode step's input, reused so a step allocates nothing
    private int _busy;

    public Generator(DeepSeekModel model, Tokenizer tokenizer, int? contextLength = null)
    {
        Model = model;
        Tokenizer = tokenizer;
        Template = GenerationEngineExtensions.TemplateFor(model, tokenizer);
        _session = model.CreateSession(contextLength);
        _logits = new float[model.Config.VocabSize];
    }

    /// <summary>Loads a Hugging Face folder holding both the model and its tokenizer files.</summary>
    public static Generator Load(string path, int? contextLength = null) =>
        new(DeepSeekModel.Load(path), Tokenizer.Load(path), contextLength);

    public DeepSeekModel Model { get; }
    public Tokenizer Tokenizer { get; }
    public ChatTemplate? Template { get; }
    public int ContextLength => _session.Capacity;

    /// <summary>R1 templates end the prompt inside an open think block.</summary>
    public static bool PromptEndsInReasoning(string prompt) =>
        prompt.TrimEnd('\n', ' ').EndsWith(ReasoningParser.OpenTag, StringComparison.Ordinal);

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
            Prefill(promptIds, cancellationToken);
            var pending = new List<GenerationUpdate>();
            while (!reply.Finished)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int next = reply.Sampler.Sample(_logits);
                reply.OnToken(next, pending);
                foreach (GenerationUpdate u in pending) yield return u;
                pending.Clear();
                if (!reply.Finished) Step(next);
            }
            reply.Complete(pending);
            foreach (GenerationUpdate u in pending) yield return u;
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>Runs the prompt through the model, reusing the cached prefix it shares with the last sequence.</summary>
    private void Prefill(int[] promptIds, CancellationToken cancellationToken)
    {
        int common = 0;
        while (common < _cached.Count && common < promptIds.Length - 1 && _cached[common] == promptIds[common]) common++;
        _session.Cache.Truncate(common);
        _cached.RemoveRange(common, _cached.Count - common);
        const int chunk = 512; // bounds scratch memory; also where cancellation is checked
        for (int start = common; start < promptIds.Length; start += chunk)
        {
            cancellationToken.ThrowIfCancellationRequested();
            ReadOnlySpan<int> part = promptIds.AsSpan(start, Math.Min(chunk, promptIds.Length - start));
            _session.Forward(part, _logits, allPositions: false);
            _cached.AddRange(part);
        }
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
