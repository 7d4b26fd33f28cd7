using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Training.Data;

/// <summary>Cuts the concatenated tokens of one or more shards into windows of T + 1 tokens (inputs are the first T,
/// targets the last T; a target counts only where the shard's loss mask says so), holds out the last windows as the
/// validation split, and deals the training windows in an order shuffled per epoch from the seed. Its whole state is
/// (epoch, position), so a resumed run continues with exactly the batches an uninterrupted one would have seen.</summary>
public sealed class BatchLoader
{
    private readonly int[] _tokens;
    private readonly byte[] _mask;
    private readonly int _seqLen, _batch;
    private readonly ulong _seed;
    private readonly int[] _order;

    public BatchLoader(IReadOnlyList<TokenShard> shards, int vocab, int batch, int seqLen, double validationFraction, ulong seed)
    {
        if (shards.Count == 0) throw new InvalidDataException("no token shards given");
        foreach (TokenShard s in shards)
            if (s.VocabSize > vocab)
                throw new InvalidDataException($"{s.Path}: tokens of a vocabulary of {s.VocabSize}, but the model's vocab_size is {vocab}");
        _tokens = [.. shards.SelectMany(s => s.Tokens)];
        _mask = [.. shards.SelectMany(s => s.LossMask)];
        _batch = batch; _seqLen = seqLen; _seed = seed;
        int windows = (_tokens.Length - 1) / seqLen;
        if (!(validationFraction >= 0 && validationFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction, "validation fraction must be in [0, 1)");
        ValidationWindows = validationFraction > 0 ? Math.Max(1, (int)Math.Round(windows * validationFraction)) : 0;
        TrainWindows = windows - ValidationWindows;
        if (TrainWindows < batch)
            throw new InvalidDataException($"{_tokens.Length:N0} tokens make {windows} windows of {seqLen} + 1 ({ValidationWindows} held out for validation): " +
                $"fewer than one batch of {batch}; add data or lower batch/seq_len");
        _order = new int[TrainWindows];
        Shuffle();
    }

    public int TrainWindows { get; }
    public int ValidationWindows { get; }
    public int Epoch { get; private set; }
    public int Position { get; private set; }
    /// <summary>Batches per pass over the training windows (a partial last batch is skipped).</summary>
    public int BatchesPerEpoch => TrainWindows / _batch;
    public int ValidationBatches => ValidationWindows / _batch;

    /// <summary>Continues from a saved (epoch, position).</summary>
    public void Restore(int epoch, int position)
    {
        if (epoch < 0 || position < 0 || position > BatchesPerEpoch * _batch)
            throw new InvalidDataException($"loader state (epoch {epoch}, position {position}) does not fit this data ({TrainWindows} training windows)");
        Epoch = epoch;
        Shuffle();
        Position = position;
    }

    /// <summary>Fills the next training batch (tokens and targets, [B·T] each).</summary>
    public void Next(Span<int> tokens, Span<int> targets)
    {
        if (Position + _batch > TrainWindows)
        {
            Epoch++;
            Shuffle();
        }
        for (int b = 0; b < _batch; b++) Fill(_order[Position + b], b, tokens, targets);
        Position += _batch;
    }

    /// <summary>Validation batch i (windows in order).</summary>
    public void Validation(int i, Span<int> tokens, Span<int> targets)
    {
        for (int b = 0; b < _batch; b++) Fill(TrainWindows + i * _batch + b, b, tokens, targets);
    }

    private void Fill(int window, int b, Span<int> tokens, Span<int> targets)
    {
        int start = window * _seqLen;
        for (int i = 0; i < _seqLen; i++)
        {
            tokens[b * _seqLen + i] = _tokens[start + i];
            targets[b * _seqLen + i] = _mask[start + i + 1] == 1 ? _tokens[start + i + 1] : -1;
        }
    }

    /// <summary>Fisher–Yates over the training windows with a generator seeded by (seed, epoch).</summary>
    private void Shuffle()
    {
        for (int i = 0; i < _order.Length; i++) _order[i] = i;
        var rng = new Rng(_seed * 0x9E3779B97F4A7C15UL + (ulong)Epoch + 1);
        for (int i = _order.Length - 1; i > 0; i--)
        {
            int j = (int)(rng.NextUInt64() % (ulong)(i + 1));
            (_order[i], _order[j]) = (_order[j], _order[i]);
        }
        Position = 0;
    }
}
