namespace DeepSeekSharp.Kernels;

/// <summary>Blocked absorbed attention of decoded tokens for all heads of a layer: the heads' packed queries of up
/// to <see cref="Tokens"/> tokens, and per block of <see cref="LatentAttention.BlockPositions"/> cached positions each
/// head's max score, Σ exp and unnormalised output (<see cref="LatentAttention.AbsorbedBlock"/>) for the token being
/// attended, merged per head in block order (<see cref="LatentAttention.AbsorbedMerge"/>) into that token's latent.
/// Several tokens' queries and latents are kept so that the projections into and out of the latent space read their
/// weights once for all of them, and block results are kept in <see cref="Slots"/> slots so that several tokens can
/// attend at once (a token's blocks in consecutive slots, wherever its first one is). The head padding and block
/// size are this kernel's business; callers see tokens, heads, blocks and positions. Sized for a cache capacity once, so decoding allocates nothing.</summary>
public sealed class AbsorbedBlocks
{
    private readonly int _heads, _padded, _rank, _width;
    /// <summary>Tokens whose queries and latents are held at once.</summary>
    public const int Tokens = 8;

    /// <summary>Block results held at once: every block of the capacity, and at least four blocks of every token
    /// (a pass of <see cref="Tokens"/> tokens up to 256 positions deep attends at once).</summary>
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

    /// <summary>Head h's packed query of token t [q_latent (rank) | q_pe (rope)], to be written by the fold step.</summary>
    public Span<float> Query(int t, int h)
    {
        if ((uint)t >= Tokens) throw new ArgumentOutOfRangeException(nameof(t));
        if ((uint)h >= (uint)_heads) throw new ArgumentOutOfRangeException(nameof(h));
        return Queries.Slice((t * _padded + h) * _width, _width);
    }

    /// <summary>Attention of token <paramref name="t"/>'s every head over block <paramref name="block"/> of
    /// <paramref name="cache"/>'s first <paramref name="count"/> rows ([count, rank + rope]), kept in
    /// <paramref name="slot"/>.</summary>
    public void Attend(int t, int block, int slot, ReadOnlySpan<float> cache, int count, float scale)
    {
        int s0 = block * LatentAttention.BlockPositions, n = Math.Min(LatentAttention.BlockPositions, count - s0);
        AttendRows(t, slot, cache.Slice(s0 * _width, n * _width), n, scale);
    }

    /// <summary>Parts a block's heads can be attended in
    /// (<see cref="AttendRows(int, int, ReadOnlySpan{float}, int, float, int, int, ReadOnlySpan{float}, bool)"/>): a group of four heads a part at
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
    /// <see cref="LatentAttention.BlockPositions"/>), kept in <paramref name="slot"/>. Heads are independent, so a block
    /// attended in parts holds the bits it holds attended whole. A thread attending a run of blocks passes each call
    /// the rows of its next one (<paramref name="next"/>, read ahead while this block is multiplied) and says whether
    /// <paramref name="rows"/> were read ahead so (<paramref name="fetched"/>); neither changes a result.</summary>
    public void AttendRows(int t, int slot, ReadOnlySpan<float> rows, int n, float scale, int part = 0, int parts = 1,
        ReadOnlySpan<float> next = default, bool fetched = false)
    {
        (int h0, int heads) = Check(t, slot, n, part, parts);
        LatentAttention.AbsorbedBlock(heads / 4, Queries.Slice((t * _padded + h0) * _width, heads * _width), rows[..(n * _width)], n, _rank, _width - _rank, scale,
            Out.Slice((slot * _padded + h0) * _rank, heads * _rank), Max.Slice(slot * _padded + h0, heads), Sum.Slice(slot * _padded + h0, heads), next, fetched);
    }

    /// <summary><see cref="AttendRows(int, int, ReadOnlySpan{float}, int, float, int, int, ReadOnlySpan{float}, bool)"/> over rows kept as bfloat16.</summary>
    public void AttendRows(int t, int slot, ReadOnlySpan<ushort> rows, int n, float scale, int part = 0, int parts = 1,
        ReadOnlySpan<ushort> next = default, bool fetched = false)
    {
        (int h0, int heads) = Check(t, slot, n, part, parts);
        LatentAttention.AbsorbedBlockBf16(heads / 4, Queries.Slice((t * _padded + h0) * _width, heads * _width), rows[..(n * _width)], n, _rank, _width - _rank, scale,
            Out.Slice((slot * _padded + h0) * _rank, heads * _rank), Max.Slice(slot * _padded + h0, heads), Sum.Slice(slot * _padded + h0, heads), next, fetched);
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

    /// <summary>Head h's attended latent Σ p_s c_kv[s] of token <paramref name="t"/> from its
    /// <paramref name="blocks"/> blocks, kept in slots <paramref name="first"/> onwards, as row t of
    /// <see cref="Latents"/>(h, ..).</summary>
    public void Merge(int first, int blocks, int h, int t)
    {
        if ((uint)h >= (uint)_heads) throw new ArgumentOutOfRangeException(nameof(h));
        if ((uint)t >= Tokens) throw new ArgumentOutOfRangeException(nameof(t));
        if (first < 0 || blocks < 1 || first + blocks > Slots) throw new ArgumentOutOfRangeException(nameof(blocks), blocks, $"slots {first}.. of {Slots}");
        LatentAttention.AbsorbedMerge(blocks, _padded, h, Out.Slice(first * _padded * _rank), Max.Slice(first * _padded), Sum.Slice(first * _padded),
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
