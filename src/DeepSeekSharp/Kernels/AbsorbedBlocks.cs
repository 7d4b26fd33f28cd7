namespace DeepSeekSharp.Kernels;

/// <summary>Blocked absorbed attention of decoded tokens for all heads of a layer: the heads' packed queries of up
/// to <see cref="Tokens"/> tokens, and per block of <see cref="LatentAttention.BlockPositions"/> cached positions each
/// head's max score, Σ exp and unnormalised output (<see cref="LatentAttention.AbsorbedBlock"/>) for the token being
/// attended, merged per head in slot order (<see cref="LatentAttention.AbsorbedMerge"/>) into that token's latent.
/// A slot holds one block's results, or in a deep context (<see cref="BlocksPerSlot"/>) those of a fixed run of
/// <see cref="GroupBlocks"/> blocks folded in order as they are attended (<see cref="LatentAttention.AbsorbedFold"/>),
/// so the merge reads an eighth of the partial outputs it would read block by block (8.4 MB a layer at 16K positions
/// for V2-Lite). Which blocks share a slot depends only on the token's position, never on the threads.
/// Several tokens' queries and latents are kept so that the projections into and out of the latent space read their
/// weights once for all of them, and results are kept in <see cref="Slots"/> slots so that several tokens can
/// attend at once (a token's slots consecutive, wherever its first one is). The head padding and block
/// size are this kernel's business; callers see tokens, heads, blocks, slots and positions. Sized for a cache capacity once, so decoding allocates nothing
/// (each thread's scratch for a folded block is made by <see cref="PrepareThisThread"/>).</summary>
public sealed class AbsorbedBlocks
{
    private readonly int _heads, _padded, _rank, _width;
    /// <summary>Tokens whose queries and latents are held at once.</summary>
    public const int Tokens = 8;

    /// <summary>Results held at once: a slot for every block of the capacity (more than a deep context needs), and at
    /// least four of every token (a pass of <see cref="Tokens"/> tokens up to 256 positions deep attends at once).</summary>
    public int Slots { get; }

    // Pinned, read from a 64-byte boundary (AlignedScratch: the kernels' 512-bit loads never split a cache line).
    private float[]? _queries; // [Tokens, padded heads, rank + rope] head h's [q_latent | q_pe]; padding heads stay zero
    private float[]? _out;     // [slots, padded heads, rank] unnormalised Σ exp(score − max) · c_kv per block
    private float[]? _max;     // [slots, padded heads] the block's max score per head
    private float[]? _sum;     // [slots, padded heads] Σ exp(score − max)
    private float[]? _latent;  // [heads, Tokens, rank] each head's merged Σ p c_kv per token
    private Span<float> Queries => AlignedScratch.Grow(ref _queries, Tokens * _padded * _width);
    private Span<float> Out => AlignedScratch.Grow(ref _out, Slots * _padded * _rank);
    private Span<float> Max => AlignedScratch.Grow(ref _max, Slots * _padded);
    private Span<float> Sum => AlignedScratch.Grow(ref _sum, Slots * _padded);
    private Span<float> Latent => AlignedScratch.Grow(ref _latent, _heads * Tokens * _rank);

    private AbsorbedBlocks(int heads, int rank, int rope, int capacity)
    {
        (_heads, _padded, _rank, _width) = (heads, LatentAttention.PaddedHeads(heads), rank, rank + rope);
        Slots = Math.Max(Blocks(capacity), 4 * Tokens);
        _ = Queries; // allocated now, so attending allocates nothing
        _ = Out;
        _ = Max;
        _ = Sum;
        _ = Latent;
    }

    /// <summary>The blocked path for these widths where this CPU has it (AVX-512, rank a multiple of 32, rope of 16);
    /// null where heads attend one at a time (<see cref="LatentAttention.Absorbed"/>).</summary>
    public static AbsorbedBlocks? For(int heads, int rank, int rope, int capacity) =>
        LatentAttention.HasBlockedAbsorbed(rank, rope) ? new AbsorbedBlocks(heads, rank, rope, capacity) : null;

    /// <summary>Chunks of heads the fold and merge steps split into (four heads a chunk).</summary>
    public int HeadGroups => _padded / 4;

    /// <summary>Blocks covering <paramref name="count"/> positions.</summary>
    public static int Blocks(int count) => (count + LatentAttention.BlockPositions - 1) / LatentAttention.BlockPositions;

    /// <summary>Blocks a deep context's slot holds.</summary>
    public const int GroupBlocks = 8;

    /// <summary>Contexts of this many blocks or more (4,096 positions) keep <see cref="GroupBlocks"/> blocks a slot:
    /// shallower ones keep a block a slot, so that a short context still splits into enough chunks for the threads.</summary>
    public const int GroupFrom = 8 * GroupBlocks;

    /// <summary>Blocks each slot holds for a token attending <paramref name="count"/> positions (the last slot may hold fewer).</summary>
    public static int BlocksPerSlot(int count) => Blocks(count) >= GroupFrom ? GroupBlocks : 1;

    /// <summary>Slots a token attending <paramref name="count"/> positions fills.</summary>
    public static int SlotsFor(int count) => (Blocks(count) + BlocksPerSlot(count) - 1) / BlocksPerSlot(count);

    /// <summary>Head h's packed query of token t [q_latent (rank) | q_pe (rope)], to be written by the fold step.</summary>
    public Span<float> Query(int t, int h)
    {
        if ((uint)t >= Tokens) throw new ArgumentOutOfRangeException(nameof(t));
        if ((uint)h >= (uint)_heads) throw new ArgumentOutOfRangeException(nameof(h));
        return Queries.Slice((t * _padded + h) * _width, _width);
    }

    /// <summary>Parts a slot's heads can be attended in
    /// (<see cref="AttendRows(int, int, ReadOnlySpan{float}, int, float, int, int, ReadOnlySpan{float}, bool, bool)"/>): a group of four heads a part at
    /// most.</summary>
    public int HeadParts => _padded / 4;

    /// <summary>Parts to attend each of <paramref name="blocks"/> blocks' heads in on <paramref name="threads"/>
    /// threads: one on one thread or where the blocks alone give every thread four or more chunks, else enough that
    /// they do (as far as the heads divide), so that a short context's few blocks (each all of V3's 128 heads, the last
    /// one short) are not attended by one thread while the others wait.</summary>
    public int PartsFor(int blocks, int threads) =>
        threads <= 1 ? 1 : Math.Clamp((4 * threads + blocks - 1) / Math.Max(blocks, 1), 1, HeadParts);

    /// <summary>Attention of token <paramref name="t"/>'s heads in part <paramref name="part"/> of
    /// <paramref name="parts"/> over the <paramref name="n"/> rows of one block ([n, rank + rope], at most
    /// <see cref="LatentAttention.BlockPositions"/>), kept in <paramref name="slot"/>, or with <paramref name="fold"/>
    /// folded into the results the slot holds of the blocks before it (<see cref="BlocksPerSlot"/>; the same heads,
    /// blocks in order). Heads are independent, so a block attended in parts holds the bits it holds attended whole.
    /// A thread attending a run of blocks passes each call the rows of its next one (<paramref name="next"/>, read
    /// ahead while this block is multiplied) and says whether <paramref name="rows"/> were read ahead so
    /// (<paramref name="fetched"/>); neither changes a result.</summary>
    public void AttendRows(int t, int slot, ReadOnlySpan<float> rows, int n, float scale, int part = 0, int parts = 1,
        ReadOnlySpan<float> next = default, bool fetched = false, bool fold = false)
    {
        (int h0, int heads) = Check(t, slot, n, part, parts);
        Target(slot, h0, heads, fold, out Span<float> o, out Span<float> m, out Span<float> l);
        LatentAttention.AbsorbedBlock(heads / 4, Queries.Slice((t * _padded + h0) * _width, heads * _width), rows[..(n * _width)], n, _rank, _width - _rank, scale,
            o, m, l, next, fetched);
        if (fold) Fold(slot, h0, heads, o, m, l);
    }

    /// <summary><see cref="AttendRows(int, int, ReadOnlySpan{float}, int, float, int, int, ReadOnlySpan{float}, bool, bool)"/> over rows kept as bfloat16.</summary>
    public void AttendRows(int t, int slot, ReadOnlySpan<ushort> rows, int n, float scale, int part = 0, int parts = 1,
        ReadOnlySpan<ushort> next = default, bool fetched = false, bool fold = false)
    {
        (int h0, int heads) = Check(t, slot, n, part, parts);
        Target(slot, h0, heads, fold, out Span<float> o, out Span<float> m, out Span<float> l);
        LatentAttention.AbsorbedBlockBf16(heads / 4, Queries.Slice((t * _padded + h0) * _width, heads * _width), rows[..(n * _width)], n, _rank, _width - _rank, scale,
            o, m, l, next, fetched);
        if (fold) Fold(slot, h0, heads, o, m, l);
    }

    // A block to be folded is attended into this thread's scratch first: [padded heads, rank], then max and Σ.
    [ThreadStatic] private static float[]? _block;

    /// <summary>Makes this thread's scratch for folding a block of <paramref name="heads"/> heads of latent rank
    /// <paramref name="rank"/>, so that a worker's first fold (a context's first decode step past 4,096 positions,
    /// whenever it comes) allocates nothing.</summary>
    public static void PrepareThisThread(int heads, int rank) => AlignedScratch.Grow(ref _block, LatentAttention.PaddedHeads(heads) * (rank + 2));

    /// <summary>Where a block's results for heads h0 .. h0 + heads − 1 go: the slot's, or the scratch to fold from.</summary>
    private void Target(int slot, int h0, int heads, bool fold, out Span<float> o, out Span<float> max, out Span<float> sum)
    {
        if (!fold)
        {
            SlotResults(slot, h0, heads, out o, out max, out sum);
            return;
        }
        Span<float> s = AlignedScratch.Grow(ref _block, _padded * (_rank + 2));
        o = s[..(heads * _rank)];
        max = s.Slice(_padded * _rank, heads);
        sum = s.Slice(_padded * (_rank + 1), heads);
    }

    /// <summary>The results slot <paramref name="slot"/> holds for heads h0 .. h0 + heads − 1.</summary>
    private void SlotResults(int slot, int h0, int heads, out Span<float> o, out Span<float> max, out Span<float> sum)
    {
        o = Out.Slice((slot * _padded + h0) * _rank, heads * _rank);
        max = Max.Slice(slot * _padded + h0, heads);
        sum = Sum.Slice(slot * _padded + h0, heads);
    }

    /// <summary>A block's results (in the scratch <see cref="Target"/> gave) folded into the slot's.</summary>
    private void Fold(int slot, int h0, int heads, ReadOnlySpan<float> o, ReadOnlySpan<float> max, ReadOnlySpan<float> sum)
    {
        SlotResults(slot, h0, heads, out Span<float> accO, out Span<float> accMax, out Span<float> accSum);
        LatentAttention.AbsorbedFold(heads, _rank, o, max, sum, accO, accMax, accSum);
    }

    /// <summary>The first padded head of the part and its heads (whole groups of four, parts as even as they divide).</summary>
    private (int First, int Heads) Check(int t, int slot, int n, int part, int parts)
    {
        if ((uint)t >= Tokens) throw new ArgumentOutOfRangeException(nameof(t));
        if ((uint)slot >= (uint)Slots) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"{Slots} slots");
        if (n < 1 || n > LatentAttention.BlockPositions) throw new ArgumentOutOfRangeException(nameof(n), n, $"1 to {LatentAttention.BlockPositions} rows a block");
        if (parts < 1 || parts > HeadParts) throw new ArgumentOutOfRangeException(nameof(parts), parts, $"1 to {HeadParts} parts");
        if ((uint)part >= (uint)parts) throw new ArgumentOutOfRangeException(nameof(part), part, $"{parts} parts");
        int g0 = part * HeadParts / parts, g1 = (part + 1) * HeadParts / parts;
        return (4 * g0, 4 * (g1 - g0));
    }

    /// <summary>Head h's attended latent Σ p_s c_kv[s] of token <paramref name="t"/> from the results it keeps in
    /// <paramref name="slots"/> slots from <paramref name="first"/> on, as row t of <see cref="Latents"/>(h, ..).</summary>
    public void Merge(int first, int slots, int h, int t)
    {
        if ((uint)h >= (uint)_heads) throw new ArgumentOutOfRangeException(nameof(h));
        if ((uint)t >= Tokens) throw new ArgumentOutOfRangeException(nameof(t));
        if (first < 0 || slots < 1 || first + slots > Slots) throw new ArgumentOutOfRangeException(nameof(slots), slots, $"slots {first}.. of {Slots}");
        LatentAttention.AbsorbedMerge(slots, _padded, h, Out.Slice(first * _padded * _rank), Max.Slice(first * _padded), Sum.Slice(first * _padded),
            Latent.Slice((h * Tokens + t) * _rank, _rank));
    }

    /// <summary>Head h's merged latents of tokens 0 .. <paramref name="tokens"/> − 1 ([tokens, rank]).</summary>
    public ReadOnlySpan<float> Latents(int h, int tokens)
    {
        if ((uint)h >= (uint)_heads) throw new ArgumentOutOfRangeException(nameof(h));
        if ((uint)tokens > Tokens) throw new ArgumentOutOfRangeException(nameof(tokens));
        return Latent.Slice(h * Tokens * _rank, tokens * _rank);
    }
}
