using System.Diagnostics.CodeAnalysis;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels;

/// <summary>Attention of one query head over a latent cache whose rows are <c>[c_kv (C) | k_pe (R)]</c>.</summary>
public static class LatentAttention
{
    /// <summary>Absorbed MLA: scores over the cached latents directly, output in latent space.</summary>
    /// <param name="qLatent">[C] q_nope already multiplied into latent space (q_nope · W_UK)</param>
    /// <param name="qPe">[R] rotated rotary query</param>
    /// <param name="cache">[count, C + R] cached rows</param>
    /// <param name="scores">[count] scratch; holds the attention probabilities on return</param>
    /// <param name="outLatent">[C] Σ p_s c_kv[s]</param>
    public static void Absorbed(ReadOnlySpan<float> qLatent, ReadOnlySpan<float> qPe, ReadOnlySpan<float> cache, int count,
        float scale, Span<float> scores, Span<float> outLatent)
    {
        int c = qLatent.Length, r = qPe.Length, stride = c + r;
        if (cache.Length < (long)count * stride) ThrowHelper.TooShort(nameof(cache), (long)count * stride, cache.Length);
        if (scores.Length < count) ThrowHelper.TooShort(nameof(scores), count, scores.Length);
        if (outLatent.Length != c) ThrowHelper.LengthMismatch(nameof(outLatent), c, outLatent.Length);
        for (int s = 0; s < count; s++)
        {
            ReadOnlySpan<float> row = cache.Slice(s * stride, stride);
            scores[s] = (Dot.Compute(qLatent, row[..c]) + Dot.Compute(qPe, row[c..])) * scale;
        }
        Span<float> p = scores[..count];
        Softmax.InPlace(p);
        outLatent.Clear();
        for (int s = 0; s < count; s++)
            Axpy.Compute(cache.Slice(s * stride, c), p[s], outLatent);
    }

    /// <summary>Whether <see cref="AbsorbedBlock"/> runs here for latent width <paramref name="c"/> and rotary width
    /// <paramref name="r"/> (AVX-512, or AVX2 with FMA; c a multiple of 32, r of 16); otherwise callers attend with
    /// <see cref="Absorbed"/> one head at a time.</summary>
    public static bool HasBlockedAbsorbed(int c, int r) =>
        (Vector512.IsHardwareAccelerated || (Vector256.IsHardwareAccelerated && Fma.IsSupported)) && c % 32 == 0 && r % 16 == 0;

    /// <summary>Heads as <see cref="AbsorbedBlock"/> takes them: rounded up to whole groups of four (the extra heads have
    /// zero queries).</summary>
    public static int PaddedHeads(int heads) => (heads + 3) / 4 * 4;

    /// <summary>Positions per <see cref="AbsorbedBlock"/> call. Fixed, so the result never depends on how blocks are
    /// spread over threads.</summary>
    public const int BlockPositions = 64;

    /// <summary>Absorbed MLA of all heads over one block of cached rows (decode: MLA's heads share one latent cache, like
    /// multi-query attention, so a block of rows is read once for every head while it is in L2). Heads go four at a
    /// time: scores of four positions × four heads accumulate in registers over the key (eight loads feed sixteen
    /// multiply-adds), then, for each 64 latent dimensions while they are in L1, the values are weighted for four
    /// heads at a time over the block's positions. For each head it leaves the block's max score
    /// m, Σ exp(score − m) and the unnormalised Σ exp(score − m) · c_kv, which <see cref="AbsorbedMerge"/> combines
    /// over the blocks in order (split-K softmax, as flash-decoding does).</summary>
    /// <param name="queries">[4 · groups, C + R]: head h's [q_latent | q_pe]</param>
    /// <param name="rows">[count, C + R] the block's cached rows</param>
    /// <param name="partial">[4 · groups, C] unnormalised outputs</param>
    /// <param name="max">[4 · groups] the block's max score per head</param>
    /// <param name="sum">[4 · groups] Σ exp(score − max) per head</param>
    /// <param name="next">the rows this thread attends next (its following block), if any: fetched into the caches
    /// while this block is multiplied</param>
    /// <param name="fetched">whether <paramref name="rows"/> were the <paramref name="next"/> of this thread's previous
    /// call (then they are not read ahead again)</param>
    public static unsafe void AbsorbedBlock(int groups, ReadOnlySpan<float> queries, ReadOnlySpan<float> rows, int count, int c, int r,
        float scale, Span<float> partial, Span<float> max, Span<float> sum, ReadOnlySpan<float> next = default, bool fetched = false)
    {
        if (rows.Length < count * (c + r)) ThrowHelper.TooShort(nameof(rows), count * (c + r), rows.Length);
        fixed (float* kv = rows, ahead = next)
            AbsorbedBlock<float, F32Rows>(groups, queries, kv, count, c, r, scale, partial, max, sum, new LookAhead((byte*)ahead, next.Length * sizeof(float)), fetched);
    }

    /// <summary><see cref="AbsorbedBlock"/> over rows kept as bfloat16, each value widened as it is loaded: the same bits
    /// as on the rows widened first.</summary>
    public static unsafe void AbsorbedBlockBf16(int groups, ReadOnlySpan<float> queries, ReadOnlySpan<ushort> rows, int count, int c, int r,
        float scale, Span<float> partial, Span<float> max, Span<float> sum, ReadOnlySpan<ushort> next = default, bool fetched = false)
    {
        if (rows.Length < count * (c + r)) ThrowHelper.TooShort(nameof(rows), count * (c + r), rows.Length);
        fixed (ushort* kv = rows, ahead = next)
            AbsorbedBlock<ushort, Bf16Rows>(groups, queries, kv, count, c, r, scale, partial, max, sum, new LookAhead((byte*)ahead, next.Length * sizeof(ushort)), fetched);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void AbsorbedBlock<T, TRows>(int groups, ReadOnlySpan<float> queries, T* kv, int count, int c, int r,
        float scale, Span<float> partial, Span<float> max, Span<float> sum, LookAhead ahead, bool fetched) where T : unmanaged where TRows : ILatentRows<T>
    {
        int stride = c + r, heads = 4 * groups;
        if (!HasBlockedAbsorbed(c, r)) throw new NotSupportedException($"no blocked absorbed attention for widths {c} + {r} here");
        if (count <= 0 || count > BlockPositions) throw new ArgumentOutOfRangeException(nameof(count), count, $"1 to {BlockPositions} positions a block");
        if (queries.Length < heads * stride) ThrowHelper.TooShort(nameof(queries), heads * stride, queries.Length);
        if (partial.Length < heads * c) ThrowHelper.TooShort(nameof(partial), heads * c, partial.Length);
        if (max.Length < heads || sum.Length < heads) ThrowHelper.TooShort(nameof(max), heads, Math.Min(max.Length, sum.Length));
        Span<float> p = heads * count <= 128 * BlockPositions ? stackalloc float[heads * count] : AttentionScratch.Probabilities(heads * count);
        fixed (float* q = queries, o = partial, pp = p)
        {
            if (!fetched) Touch((byte*)kv, (long)count * stride * sizeof(T));
            // The next block's lines spread over the tiles of both passes below (each pass steps once a tile).
            ahead.Spread(Vector512.IsHardwareAccelerated ? groups * (count / 4 + c / 64 + c % 64 / 32) : groups * (count / 3 + c / 24 + c % 24 / 8));
            if (Vector512.IsHardwareAccelerated) Scores4<T, TRows>(kv, stride, count, q, groups, scale, pp, ref ahead);
            else Scores256<T, TRows>(kv, stride, count, q, groups, scale, pp, ref ahead);
            for (int h = 0; h < heads; h++) sum[h] = Softmax.ExpInPlace(p.Slice(h * count, count), out max[h]);
            if (Vector512.IsHardwareAccelerated) Values4<T, TRows>(kv, stride, c, count, groups, pp, o, ref ahead);
            else Values256<T, TRows>(kv, stride, c, count, groups, pp, o, ref ahead);
            ahead.Rest();
        }
    }

    /// <summary>Reads one value from every cache line of <paramref name="bytes"/> bytes at <paramref name="p"/>, in
    /// order, before a block is multiplied. A decode step finds the cache cold (between two visits of a layer the
    /// weights of the whole model stream through the caches), and the scores' first pass reads four rows 2,304 bytes
    /// apart in step, which the hardware prefetcher does not follow: a pass of loads with nothing waiting on them has
    /// the block in L2 sooner than the first pass's misses do (v2-lite-8 on Zen 4, two threads: attention at 4,096
    /// and 16,384 positions 6–20% faster; docs/benchmarks.md). A block already in L2 pays ~5% for it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Touch(byte* p, long bytes)
    {
        long a = 0, b = 0, c = 0, d = 0, i = 0;
        for (; i + 256 <= bytes; i += 256)
        {
            a |= *(long*)(p + i);
            b |= *(long*)(p + i + 64);
            c |= *(long*)(p + i + 128);
            d |= *(long*)(p + i + 192);
        }
        for (; i < bytes; i += 64) a |= *(p + i);
        _touched = a | b | c | d; // kept, so the loads are not dropped
    }

    private static long _touched;

    /// <summary>The next block's rows, prefetched a few cache lines at a time over the tiles of this block's scores and
    /// values, so that they arrive while this block is multiplied instead of in a pass of their own
    /// (<see cref="Touch"/>) before it: at 16,384 positions, where a layer's cache (37.7 MB) streams from memory,
    /// one thread attended at 56–58 GFLOP/s touching each block first and 60–63 reading the next one ahead (Zen 3,
    /// <c>bench attention</c>; 69 with the cache in L2/L3). Whatever lines the steps leave are fetched at the end.</summary>
    private unsafe struct LookAhead(byte* start, long bytes)
    {
        private byte* _p = start;
        private readonly byte* _end = start + bytes;
        private long _lines; // per step

        /// <summary>Spreads the lines over <paramref name="steps"/> steps.</summary>
        public void Spread(int steps) => _lines = steps <= 0 ? 0 : ((_end - _p + 63) / 64 + steps - 1) / steps;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Step()
        {
            if (_p >= _end) return;
            byte* stop = _p + 64 * _lines;
            if (stop > _end) stop = _end;
            for (; _p < stop; _p += 64) Sse.Prefetch0(_p);
        }

        /// <summary>The lines not yet prefetched.</summary>
        public void Rest()
        {
            for (; _p < _end; _p += 64) Sse.Prefetch0(_p);
        }
    }

    /// <summary>Head <paramref name="h"/>'s attended latent from the blocks' results of <see cref="AbsorbedBlock"/>
    /// (<paramref name="heads"/> = the padded head count they were made with): M = max_b m_b,
    /// L = Σ_b l_b·exp(m_b − M), out = (Σ_b exp(m_b − M)·o_b) / L, blocks added in order. A head's outputs lie one
    /// per block, a padded head count apart (32 KB for V2-Lite), so each is prefetched two blocks ahead: at 16,384
    /// positions (256 blocks, 8.4 MB of outputs a layer) the merge of a two-thread decode step took 3.8–4.0 ms
    /// without and 3.1–3.3 with (v2-lite-8 Q8_0, Zen 3).</summary>
    public static unsafe void AbsorbedMerge(int blocks, int heads, int h, ReadOnlySpan<float> partial, ReadOnlySpan<float> max,
        ReadOnlySpan<float> sum, Span<float> outLatent)
    {
        int c = outLatent.Length;
        if (blocks <= 0 || partial.Length < ((blocks - 1) * heads + h + 1) * c || max.Length < blocks * heads || sum.Length < blocks * heads)
            ThrowHelper.TooShort(nameof(partial), (long)blocks * heads * c, partial.Length);
        float m = float.NegativeInfinity;
        for (int b = 0; b < blocks; b++) m = MathF.Max(m, max[b * heads + h]);
        float total = 0;
        outLatent.Clear();
        for (int b = 0; b < blocks; b++)
        {
            if (b + 2 < blocks && Sse.IsSupported)
                fixed (float* ahead = partial.Slice(((b + 2) * heads + h) * c, c))
                    for (int i = 0; i < c; i += 16) Sse.Prefetch0(ahead + i);
            float w = FastExp.Exp(max[b * heads + h] - m);
            total += sum[b * heads + h] * w;
            Axpy.Compute(partial.Slice((b * heads + h) * c, c), w, outLatent);
        }
        TensorPrimitives.Multiply(outLatent, 1f / total, outLatent);
    }

    /// <summary>Folds one block's results for <paramref name="heads"/> heads (<paramref name="partial"/> [heads, c],
    /// <paramref name="max"/>, <paramref name="sum"/>, as <see cref="AbsorbedBlock"/> leaves them) into the results of
    /// the blocks before it (<paramref name="accPartial"/>, <paramref name="accMax"/>, <paramref name="accSum"/>, the
    /// same shapes): per head M = max(M_acc, m), acc = acc·exp(M_acc − M) + o·exp(m − M), L = L_acc·exp(M_acc − M) +
    /// l·exp(m − M), the old results left unscaled where M_acc is already the max. A run of blocks folded so leaves one
    /// result for <see cref="AbsorbedMerge"/>, which a deep context's merge then reads instead of every block's.</summary>
    public static void AbsorbedFold(int heads, int c, ReadOnlySpan<float> partial, ReadOnlySpan<float> max, ReadOnlySpan<float> sum,
        Span<float> accPartial, Span<float> accMax, Span<float> accSum)
    {
        if (partial.Length < heads * c || accPartial.Length < heads * c) ThrowHelper.TooShort(nameof(partial), heads * c, Math.Min(partial.Length, accPartial.Length));
        if (max.Length < heads || sum.Length < heads || accMax.Length < heads || accSum.Length < heads)
            ThrowHelper.TooShort(nameof(max), heads, Math.Min(Math.Min(max.Length, sum.Length), Math.Min(accMax.Length, accSum.Length)));
        for (int h = 0; h < heads; h++)
        {
            Span<float> acc = accPartial.Slice(h * c, c);
            float m = MathF.Max(accMax[h], max[h]);
            if (m > accMax[h])
            {
                float a = FastExp.Exp(accMax[h] - m);
                TensorPrimitives.Multiply(acc, a, acc);
                accSum[h] *= a;
            }
            float w = FastExp.Exp(max[h] - m);
            accSum[h] += sum[h] * w;
            Axpy.Compute(partial.Slice(h * c, c), w, acc);
            accMax[h] = m;
        }
    }

    /// <summary>p[h · count + s] = (row s · q_h) · scale for four heads; four positions at a time (then one at a time),
    /// each head's sum over the row in 16-wide steps from the start, reduced in <see cref="Reduce16"/>'s fixed order.
    /// Four rows × four heads in registers: eight loads feed sixteen multiply-adds, and a tile's sixteen sums are reduced
    /// together (<see cref="Reduce16x16"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Scores4<T, TRows>(T* kv, int stride, int count, float* queries, int groups, float scale, float* scores,
        ref LookAhead ahead) where T : unmanaged where TRows : ILatentRows<T>
    {
        int full = count / 4 * 4;
        for (int g = 0; g < groups; g++)
        for (int s = 0; s < full; s += 4)
        {
            ahead.Step();
            float* q = queries + g * 4 * stride, q1 = q + stride, q2 = q1 + stride, q3 = q2 + stride;
            float* p = scores + g * 4 * count, p1 = p + count, p2 = p1 + count, p3 = p2 + count;
            T* k0 = kv + (long)s * stride, k1 = k0 + stride, k2 = k1 + stride, k3 = k2 + stride;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, e0 = default, e1 = default, e2 = default, e3 = default;
            int d = 0;
            for (; d + 32 <= stride; d += 32)
            {
                Vector512<float> x0 = TRows.Load(k0 + d, 0), x1 = TRows.Load(k1 + d, 0), x2 = TRows.Load(k2 + d, 0), x3 = TRows.Load(k3 + d, 0);
                Tile4x4(x0, x1, x2, x3, q + d, q1 + d, q2 + d, q3 + d, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3,
                    ref c0, ref c1, ref c2, ref c3, ref e0, ref e1, ref e2, ref e3);
                x0 = TRows.Load(k0 + d, 1); x1 = TRows.Load(k1 + d, 1); x2 = TRows.Load(k2 + d, 1); x3 = TRows.Load(k3 + d, 1);
                Tile4x4(x0, x1, x2, x3, q + d + 16, q1 + d + 16, q2 + d + 16, q3 + d + 16, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3,
                    ref c0, ref c1, ref c2, ref c3, ref e0, ref e1, ref e2, ref e3);
            }
            if (d < stride) // a tail of sixteen in natural order
                Tile4x4(TRows.LoadTail(k0 + d), TRows.LoadTail(k1 + d), TRows.LoadTail(k2 + d), TRows.LoadTail(k3 + d), q + d, q1 + d, q2 + d, q3 + d,
                    ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3, ref c0, ref c1, ref c2, ref c3, ref e0, ref e1, ref e2, ref e3);
            // Lane 4h + j: head h at position s + j, each the Reduce16 of its accumulator.
            Vector512<float> sums = Reduce16x16(a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, e0, e1, e2, e3) * scale;
            sums.GetLower().GetLower().Store(p + s);
            sums.GetLower().GetUpper().Store(p1 + s);
            sums.GetUpper().GetLower().Store(p2 + s);
            sums.GetUpper().GetUpper().Store(p3 + s);
        }
        for (int g = 0; g < groups; g++)
        for (int s = full; s < count; s++)
        {
            float* q = queries + g * 4 * stride, q1 = q + stride, q2 = q1 + stride, q3 = q2 + stride;
            float* p = scores + g * 4 * count, p1 = p + count, p2 = p1 + count, p3 = p2 + count;
            T* k0 = kv + (long)s * stride;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            int d = 0;
            for (; d + 32 <= stride; d += 32)
            {
                Row4(TRows.Load(k0 + d, 0), q + d, q1 + d, q2 + d, q3 + d, ref a0, ref a1, ref a2, ref a3);
                Row4(TRows.Load(k0 + d, 1), q + d + 16, q1 + d + 16, q2 + d + 16, q3 + d + 16, ref a0, ref a1, ref a2, ref a3);
            }
            if (d < stride) Row4(TRows.LoadTail(k0 + d), q + d, q1 + d, q2 + d, q3 + d, ref a0, ref a1, ref a2, ref a3);
            p[s] = Reduce16(a0) * scale; p1[s] = Reduce16(a1) * scale; p2[s] = Reduce16(a2) * scale; p3[s] = Reduce16(a3) * scale;
        }
    }

    /// <summary>Sixteen values of four rows (x0–x3) into the sums of four heads' queries (at q0–q3): row k's sums of
    /// head h in the accumulator named for k (a, b, c, e), numbered h.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Tile4x4(Vector512<float> x0, Vector512<float> x1, Vector512<float> x2, Vector512<float> x3,
        float* q0, float* q1, float* q2, float* q3,
        ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> a2, ref Vector512<float> a3,
        ref Vector512<float> b0, ref Vector512<float> b1, ref Vector512<float> b2, ref Vector512<float> b3,
        ref Vector512<float> c0, ref Vector512<float> c1, ref Vector512<float> c2, ref Vector512<float> c3,
        ref Vector512<float> e0, ref Vector512<float> e1, ref Vector512<float> e2, ref Vector512<float> e3)
    {
        Vector512<float> w = Vector512.Load(q0);
        a0 = Vector512.FusedMultiplyAdd(x0, w, a0); b0 = Vector512.FusedMultiplyAdd(x1, w, b0);
        c0 = Vector512.FusedMultiplyAdd(x2, w, c0); e0 = Vector512.FusedMultiplyAdd(x3, w, e0);
        w = Vector512.Load(q1);
        a1 = Vector512.FusedMultiplyAdd(x0, w, a1); b1 = Vector512.FusedMultiplyAdd(x1, w, b1);
        c1 = Vector512.FusedMultiplyAdd(x2, w, c1); e1 = Vector512.FusedMultiplyAdd(x3, w, e1);
        w = Vector512.Load(q2);
        a2 = Vector512.FusedMultiplyAdd(x0, w, a2); b2 = Vector512.FusedMultiplyAdd(x1, w, b2);
        c2 = Vector512.FusedMultiplyAdd(x2, w, c2); e2 = Vector512.FusedMultiplyAdd(x3, w, e2);
        w = Vector512.Load(q3);
        a3 = Vector512.FusedMultiplyAdd(x0, w, a3); b3 = Vector512.FusedMultiplyAdd(x1, w, b3);
        c3 = Vector512.FusedMultiplyAdd(x2, w, c3); e3 = Vector512.FusedMultiplyAdd(x3, w, e3);
    }

    /// <summary>Sixteen values of one row (x) into the sums of four heads' queries (at q0–q3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Row4(Vector512<float> x, float* q0, float* q1, float* q2, float* q3,
        ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> a2, ref Vector512<float> a3)
    {
        a0 = Vector512.FusedMultiplyAdd(x, Vector512.Load(q0), a0);
        a1 = Vector512.FusedMultiplyAdd(x, Vector512.Load(q1), a1);
        a2 = Vector512.FusedMultiplyAdd(x, Vector512.Load(q2), a2);
        a3 = Vector512.FusedMultiplyAdd(x, Vector512.Load(q3), a3);
    }

    /// <summary>o[h · c + j] = Σ_s p[h · count + s] · row s [j] for four heads, 64 latent dimensions at a time (then 32)
    /// with the sums in registers over the positions in order: four loads and four broadcasts feed sixteen
    /// multiply-adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Values4<T, TRows>(T* kv, int stride, int c, int count, int groups, float* probabilities, float* outputs,
        ref LookAhead ahead) where T : unmanaged where TRows : ILatentRows<T>
    {
        int j = 0;
        for (; j + 64 <= c; j += 64)
        for (int g = 0; g < groups; g++)
        {
            ahead.Step();
            float* p = probabilities + g * 4 * count, p1 = p + count, p2 = p1 + count, p3 = p2 + count;
            float* o = outputs + g * 4 * c, o1 = o + c, o2 = o1 + c, o3 = o2 + c;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, e0 = default, e1 = default, e2 = default, e3 = default;
            T* row = kv + j;
            for (int s = 0; s < count; s++, row += stride)
            {
                Vector512<float> x0 = TRows.Load(row, 0), x1 = TRows.Load(row, 1), x2 = TRows.Load(row + 32, 0), x3 = TRows.Load(row + 32, 1);
                Vector512<float> w = Vector512.Create(p[s]);
                a0 = Vector512.FusedMultiplyAdd(x0, w, a0); b0 = Vector512.FusedMultiplyAdd(x1, w, b0);
                c0 = Vector512.FusedMultiplyAdd(x2, w, c0); e0 = Vector512.FusedMultiplyAdd(x3, w, e0);
                w = Vector512.Create(p1[s]);
                a1 = Vector512.FusedMultiplyAdd(x0, w, a1); b1 = Vector512.FusedMultiplyAdd(x1, w, b1);
                c1 = Vector512.FusedMultiplyAdd(x2, w, c1); e1 = Vector512.FusedMultiplyAdd(x3, w, e1);
                w = Vector512.Create(p2[s]);
                a2 = Vector512.FusedMultiplyAdd(x0, w, a2); b2 = Vector512.FusedMultiplyAdd(x1, w, b2);
                c2 = Vector512.FusedMultiplyAdd(x2, w, c2); e2 = Vector512.FusedMultiplyAdd(x3, w, e2);
                w = Vector512.Create(p3[s]);
                a3 = Vector512.FusedMultiplyAdd(x0, w, a3); b3 = Vector512.FusedMultiplyAdd(x1, w, b3);
                c3 = Vector512.FusedMultiplyAdd(x2, w, c3); e3 = Vector512.FusedMultiplyAdd(x3, w, e3);
            }
            a0.Store(o + j); b0.Store(o + j + 16); c0.Store(o + j + 32); e0.Store(o + j + 48);
            a1.Store(o1 + j); b1.Store(o1 + j + 16); c1.Store(o1 + j + 32); e1.Store(o1 + j + 48);
            a2.Store(o2 + j); b2.Store(o2 + j + 16); c2.Store(o2 + j + 32); e2.Store(o2 + j + 48);
            a3.Store(o3 + j); b3.Store(o3 + j + 16); c3.Store(o3 + j + 32); e3.Store(o3 + j + 48);
        }
        for (; j < c; j += 32)
        for (int g = 0; g < groups; g++)
        {
            ahead.Step();
            float* p = probabilities + g * 4 * count, p1 = p + count, p2 = p1 + count, p3 = p2 + count;
            float* o = outputs + g * 4 * c, o1 = o + c, o2 = o1 + c, o3 = o2 + c;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            T* row = kv + j;
            for (int s = 0; s < count; s++, row += stride)
            {
                Vector512<float> x0 = TRows.Load(row, 0), x1 = TRows.Load(row, 1);
                Vector512<float> w0 = Vector512.Create(p[s]), w1 = Vector512.Create(p1[s]), w2 = Vector512.Create(p2[s]), w3 = Vector512.Create(p3[s]);
                a0 = Vector512.FusedMultiplyAdd(x0, w0, a0); b0 = Vector512.FusedMultiplyAdd(x1, w0, b0);
                a1 = Vector512.FusedMultiplyAdd(x0, w1, a1); b1 = Vector512.FusedMultiplyAdd(x1, w1, b1);
                a2 = Vector512.FusedMultiplyAdd(x0, w2, a2); b2 = Vector512.FusedMultiplyAdd(x1, w2, b2);
                a3 = Vector512.FusedMultiplyAdd(x0, w3, a3); b3 = Vector512.FusedMultiplyAdd(x1, w3, b3);
            }
            a0.Store(o + j); b0.Store(o + j + 16);
            a1.Store(o1 + j); b1.Store(o1 + j + 16);
            a2.Store(o2 + j); b2.Store(o2 + j + 16);
            a3.Store(o3 + j); b3.Store(o3 + j + 16);
        }
    }

    /// <summary><see cref="Scores4"/> in 256-bit registers (AVX2): each head's sixteen-lane sum over a row kept as two
    /// eight-lane halves (lanes 0–7 and 8–15 of the 512-bit accumulator, the same fused multiply-adds), then reduced
    /// as <see cref="Reduce16"/> reduces it — the same bits. Three positions × a group's four heads a pass (twelve
    /// accumulators of one half: three loads of rows and four of queries feed twelve multiply-adds; four positions ×
    /// two heads, eight accumulators, ran 64–65 GFLOP/s where this ran 69–71 in a C model of the two on Zen 3), then
    /// the positions past the last three one at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Scores256<T, TRows>(T* kv, int stride, int count, float* queries, int groups, float scale, float* scores,
        ref LookAhead ahead) where T : unmanaged where TRows : ILatentRows<T>
    {
        float* sums = stackalloc float[2 * 12 * 8]; // per half: [head][position][lane]
        int full = count / 3 * 3;
        for (int g = 0; g < groups; g++)
        for (int s = 0; s < full; s += 3)
        {
            ahead.Step();
            float* q0 = queries + g * 4 * stride, q1 = q0 + stride, q2 = q1 + stride, q3 = q2 + stride;
            T* k0 = kv + (long)s * stride;
            ScoresHalf256<T, TRows>(k0, stride, q0, q1, q2, q3, sums, 0, 2);
            ScoresHalf256<T, TRows>(k0, stride, q0, q1, q2, q3, sums + 96, 1, 3);
            for (int h = 0; h < 4; h++)
            {
                float* p = scores + (g * 4 + h) * count + s;
                for (int j = 0; j < 3; j++)
                    p[j] = Reduce8(Vector256.Load(sums + 24 * h + 8 * j) + Vector256.Load(sums + 96 + 24 * h + 8 * j)) * scale;
            }
        }
        for (int g = 0; g < groups; g++)
        for (int s = full; s < count; s++)
        {
            T* k0 = kv + (long)s * stride;
            for (int h = 0; h < 4; h++)
            {
                float* q = queries + (g * 4 + h) * stride;
                Vector256<float> a = default, b = default;
                int d = 0;
                for (; d + 32 <= stride; d += 32)
                {
                    a = Vector256.FusedMultiplyAdd(TRows.Load256(k0 + d, 0), Vector256.Load(q + d), a);
                    b = Vector256.FusedMultiplyAdd(TRows.Load256(k0 + d, 1), Vector256.Load(q + d + 8), b);
                    a = Vector256.FusedMultiplyAdd(TRows.Load256(k0 + d, 2), Vector256.Load(q + d + 16), a);
                    b = Vector256.FusedMultiplyAdd(TRows.Load256(k0 + d, 3), Vector256.Load(q + d + 24), b);
                }
                if (d < stride)
                {
                    a = Vector256.FusedMultiplyAdd(TRows.LoadTail256(k0 + d), Vector256.Load(q + d), a);
                    b = Vector256.FusedMultiplyAdd(TRows.LoadTail256(k0 + d + 8), Vector256.Load(q + d + 8), b);
                }
                scores[(g * 4 + h) * count + s] = Reduce8(a + b) * scale;
            }
        }
    }

    /// <summary>One half of <see cref="Scores256"/>'s pass: lanes 8·half … 8·half + 7 of the sixteen-wide steps over three
    /// rows from <paramref name="k"/> (each 32-value chunk's quarters <paramref name="half"/> and <paramref name="upper"/>
    /// = half + 2, then a natural-order tail's half), for a group's four heads; the twelve eight-lane sums stored at <paramref name="dst"/> as [head][row][lane].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void ScoresHalf256<T, TRows>(T* k, int stride, float* q0, float* q1, float* q2, float* q3, float* dst,
        [ConstantExpected(Min = 0, Max = 1)] int half, [ConstantExpected(Min = 2, Max = 3)] int upper) where T : unmanaged where TRows : ILatentRows<T>
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, b0 = default, b1 = default, b2 = default;
        Vector256<float> c0 = default, c1 = default, c2 = default, e0 = default, e1 = default, e2 = default;
        int d = 0;
        for (; d + 32 <= stride; d += 32)
        {
            Step3x4(TRows.Load256(k + d, half), TRows.Load256(k + stride + d, half), TRows.Load256(k + 2 * stride + d, half),
                d + 8 * half, q0, q1, q2, q3, ref a0, ref a1, ref a2, ref b0, ref b1, ref b2, ref c0, ref c1, ref c2, ref e0, ref e1, ref e2);
            Step3x4(TRows.Load256(k + d, upper), TRows.Load256(k + stride + d, upper), TRows.Load256(k + 2 * stride + d, upper),
                d + 16 + 8 * half, q0, q1, q2, q3, ref a0, ref a1, ref a2, ref b0, ref b1, ref b2, ref c0, ref c1, ref c2, ref e0, ref e1, ref e2);
        }
        if (d < stride)
        {
            int o = d + 8 * half;
            Step3x4(TRows.LoadTail256(k + o), TRows.LoadTail256(k + stride + o), TRows.LoadTail256(k + 2 * stride + o),
                o, q0, q1, q2, q3, ref a0, ref a1, ref a2, ref b0, ref b1, ref b2, ref c0, ref c1, ref c2, ref e0, ref e1, ref e2);
        }
        a0.Store(dst); a1.Store(dst + 8); a2.Store(dst + 16);
        b0.Store(dst + 24); b1.Store(dst + 32); b2.Store(dst + 40);
        c0.Store(dst + 48); c1.Store(dst + 56); c2.Store(dst + 64);
        e0.Store(dst + 72); e1.Store(dst + 80); e2.Store(dst + 88);
    }

    /// <summary>Eight values of three rows (x0–x2) into the sums of four heads' queries at offset <paramref name="o"/>:
    /// row k's sums in the accumulators numbered k, head h's named a, b, c, e.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Step3x4(Vector256<float> x0, Vector256<float> x1, Vector256<float> x2, int o, float* q0, float* q1, float* q2, float* q3,
        ref Vector256<float> a0, ref Vector256<float> a1, ref Vector256<float> a2, ref Vector256<float> b0, ref Vector256<float> b1, ref Vector256<float> b2,
        ref Vector256<float> c0, ref Vector256<float> c1, ref Vector256<float> c2, ref Vector256<float> e0, ref Vector256<float> e1, ref Vector256<float> e2)
    {
        Vector256<float> w = Vector256.Load(q0 + o);
        a0 = Vector256.FusedMultiplyAdd(x0, w, a0); a1 = Vector256.FusedMultiplyAdd(x1, w, a1); a2 = Vector256.FusedMultiplyAdd(x2, w, a2);
        w = Vector256.Load(q1 + o);
        b0 = Vector256.FusedMultiplyAdd(x0, w, b0); b1 = Vector256.FusedMultiplyAdd(x1, w, b1); b2 = Vector256.FusedMultiplyAdd(x2, w, b2);
        w = Vector256.Load(q2 + o);
        c0 = Vector256.FusedMultiplyAdd(x0, w, c0); c1 = Vector256.FusedMultiplyAdd(x1, w, c1); c2 = Vector256.FusedMultiplyAdd(x2, w, c2);
        w = Vector256.Load(q3 + o);
        e0 = Vector256.FusedMultiplyAdd(x0, w, e0); e1 = Vector256.FusedMultiplyAdd(x1, w, e1); e2 = Vector256.FusedMultiplyAdd(x2, w, e2);
    }

    /// <summary><see cref="Reduce16"/> after its first step (lanes i + (i + 8) already added).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Reduce8(Vector256<float> h)
    {
        Vector128<float> q = h.GetLower() + h.GetUpper();
        return (q.GetElement(0) + q.GetElement(2)) + (q.GetElement(1) + q.GetElement(3));
    }

    /// <summary><see cref="Values4"/> in 256-bit registers (AVX2): 24 latent dimensions of a group's four heads a pass
    /// (twelve accumulators: three loads and four broadcasts feed twelve multiply-adds; 32 dimensions of two heads,
    /// eight accumulators, ran 71–76 GFLOP/s where this ran 94–96 in a C model of the two on Zen 3), the last
    /// dimensions eight at a time; each output lane the same fused multiply-adds over the positions in order — the
    /// same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Values256<T, TRows>(T* kv, int stride, int c, int count, int groups, float* probabilities, float* outputs,
        ref LookAhead ahead) where T : unmanaged where TRows : ILatentRows<T>
    {
        // 96 dimensions (three chunks) in four passes of 24, each load a fixed quarter of a chunk; the last chunks
        // (c not a multiple of 96) a pass of 24 and one of eight each.
        int j = 0;
        for (; j + 96 <= c; j += 96)
        {
            ValuesPass256<T, TRows>(kv + j, stride, c, count, groups, probabilities, outputs + j, ref ahead, 0, 0, 0, 1, 0, 2);
            ValuesPass256<T, TRows>(kv + j, stride, c, count, groups, probabilities, outputs + j + 24, ref ahead, 0, 3, 32, 0, 32, 1);
            ValuesPass256<T, TRows>(kv + j, stride, c, count, groups, probabilities, outputs + j + 48, ref ahead, 32, 2, 32, 3, 64, 0);
            ValuesPass256<T, TRows>(kv + j, stride, c, count, groups, probabilities, outputs + j + 72, ref ahead, 64, 1, 64, 2, 64, 3);
        }
        for (; j < c; j += 32)
        {
            ValuesPass256<T, TRows>(kv + j, stride, c, count, groups, probabilities, outputs + j, ref ahead, 0, 0, 0, 1, 0, 2);
            for (int g = 0; g < groups; g++)
            {
                ahead.Step();
                float* p0 = probabilities + g * 4 * count, p1 = p0 + count, p2 = p1 + count, p3 = p2 + count;
                float* o0 = outputs + g * 4 * c + j + 24;
                Vector256<float> a = default, b = default, d = default, e = default;
                T* row = kv + j;
                for (int s = 0; s < count; s++, row += stride)
                {
                    Vector256<float> x = TRows.Load256(row, 3);
                    a = Vector256.FusedMultiplyAdd(x, Vector256.Create(p0[s]), a);
                    b = Vector256.FusedMultiplyAdd(x, Vector256.Create(p1[s]), b);
                    d = Vector256.FusedMultiplyAdd(x, Vector256.Create(p2[s]), d);
                    e = Vector256.FusedMultiplyAdd(x, Vector256.Create(p3[s]), e);
                }
                a.Store(o0); b.Store(o0 + c); d.Store(o0 + 2 * c); e.Store(o0 + 3 * c);
            }
        }
    }

    /// <summary>One pass of <see cref="Values256"/>: 24 output dimensions from <paramref name="outputs"/> for every group,
    /// their three eight-value loads quarters <paramref name="qa"/>, <paramref name="qb"/>, <paramref name="qc"/> of
    /// the chunks <paramref name="ca"/>, <paramref name="cb"/>, <paramref name="cc"/> values past each row's
    /// <paramref name="kv"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void ValuesPass256<T, TRows>(T* kv, int stride, int c, int count, int groups, float* probabilities, float* outputs,
        ref LookAhead ahead, int ca, [ConstantExpected(Min = 0, Max = 3)] int qa, int cb, [ConstantExpected(Min = 0, Max = 3)] int qb,
        int cc, [ConstantExpected(Min = 0, Max = 3)] int qc) where T : unmanaged where TRows : ILatentRows<T>
    {
        for (int g = 0; g < groups; g++)
        {
            ahead.Step();
            float* p0 = probabilities + g * 4 * count, p1 = p0 + count, p2 = p1 + count, p3 = p2 + count;
            float* o0 = outputs + g * 4 * c, o1 = o0 + c, o2 = o1 + c, o3 = o2 + c;
            Vector256<float> a0 = default, a1 = default, a2 = default, b0 = default, b1 = default, b2 = default;
            Vector256<float> c0 = default, c1 = default, c2 = default, e0 = default, e1 = default, e2 = default;
            T* row = kv;
            for (int s = 0; s < count; s++, row += stride)
            {
                Vector256<float> x0 = TRows.Load256(row + ca, qa), x1 = TRows.Load256(row + cb, qb), x2 = TRows.Load256(row + cc, qc);
                Vector256<float> w = Vector256.Create(p0[s]);
                a0 = Vector256.FusedMultiplyAdd(x0, w, a0); a1 = Vector256.FusedMultiplyAdd(x1, w, a1); a2 = Vector256.FusedMultiplyAdd(x2, w, a2);
                w = Vector256.Create(p1[s]);
                b0 = Vector256.FusedMultiplyAdd(x0, w, b0); b1 = Vector256.FusedMultiplyAdd(x1, w, b1); b2 = Vector256.FusedMultiplyAdd(x2, w, b2);
                w = Vector256.Create(p2[s]);
                c0 = Vector256.FusedMultiplyAdd(x0, w, c0); c1 = Vector256.FusedMultiplyAdd(x1, w, c1); c2 = Vector256.FusedMultiplyAdd(x2, w, c2);
                w = Vector256.Create(p3[s]);
                e0 = Vector256.FusedMultiplyAdd(x0, w, e0); e1 = Vector256.FusedMultiplyAdd(x1, w, e1); e2 = Vector256.FusedMultiplyAdd(x2, w, e2);
            }
            a0.Store(o0); a1.Store(o0 + 8); a2.Store(o0 + 16);
            b0.Store(o1); b1.Store(o1 + 8); b2.Store(o1 + 16);
            c0.Store(o2); c1.Store(o2 + 8); c2.Store(o2 + 16);
            e0.Store(o3); e1.Store(o3 + 8); e2.Store(o3 + 16);
        }
    }

    /// <summary>Four positions' accumulators of four heads (position j's of head h is argument 4j + h) reduced together:
    /// lane 4h + j of the result is <see cref="Reduce16"/> of position j's accumulator of head h, bit for bit — the same
    /// additions in the same order (halves, quarters, then (0 + 2) + (1 + 3)), done for sixteen accumulators at once:
    /// 45 shuffles and adds where sixteen reductions took about ten instructions each.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Reduce16x16(
        Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3,
        Vector512<float> b0, Vector512<float> b1, Vector512<float> b2, Vector512<float> b3,
        Vector512<float> c0, Vector512<float> c1, Vector512<float> c2, Vector512<float> c3,
        Vector512<float> e0, Vector512<float> e1, Vector512<float> e2, Vector512<float> e3)
    {
        // Per position j, its four heads' quarter sums, head h in 128-bit lane h.
        Vector512<float> m0 = Quarters(Halves(a0, a1), Halves(a2, a3)), m1 = Quarters(Halves(b0, b1), Halves(b2, b3));
        Vector512<float> m2 = Quarters(Halves(c0, c1), Halves(c2, c3)), m3 = Quarters(Halves(e0, e1), Halves(e2, e3));
        // In each 128-bit lane: (q0 + q2, q1 + q3) of two positions, then their sum, position j in element j.
        Vector512<float> t01 = Avx512F.Shuffle(m0, m1, 0x44) + Avx512F.Shuffle(m0, m1, 0xEE);
        Vector512<float> t23 = Avx512F.Shuffle(m2, m3, 0x44) + Avx512F.Shuffle(m2, m3, 0xEE);
        return Avx512F.Shuffle(t01, t23, 0x88) + Avx512F.Shuffle(t01, t23, 0xDD);
    }

    /// <summary>Lanes i + (i + 8) of x (128-bit lanes 0–1 of the result) and of y (lanes 2–3), i = 0..7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Halves(Vector512<float> x, Vector512<float> y) =>
        Avx512F.Shuffle4x128(x, y, 0x44) + Avx512F.Shuffle4x128(x, y, 0xEE);

    /// <summary>From two results of <see cref="Halves"/> (of vectors v0, v1 and v2, v3): 128-bit lane k holds v_k's four
    /// sums of its partial sums i + (i + 4).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Quarters(Vector512<float> x, Vector512<float> y) =>
        Avx512F.Shuffle4x128(x, y, 0x88) + Avx512F.Shuffle4x128(x, y, 0xDD);

    /// <summary>The sixteen lanes added in a fixed order (halves, then quarters, then ((0 + 2) + (1 + 3))).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Reduce16(Vector512<float> v) => Reduce8(v.GetLower() + v.GetUpper());

    /// <summary>Expanded MLA for one head: keys are [k_nope (from decompressed kv) | k_pe (from cache)].</summary>
    /// <param name="qNope">[N] non-rotary query</param>
    /// <param name="qPe">[R] rotated rotary query</param>
    /// <param name="kv">decompressed rows; row s of this head starts at s·kvStride + kvOffset: [k_nope (N) | v (V)]</param>
    /// <param name="cache">[count, C + R] cached rows (only k_pe, the last R of each row, is read)</param>
    /// <param name="output">[V] Σ p_s v[s]</param>
    public static void Expanded(ReadOnlySpan<float> qNope, ReadOnlySpan<float> qPe, ReadOnlySpan<float> kv, int kvStride, int kvOffset,
        ReadOnlySpan<float> cache, int cacheStride, int count, float scale, Span<float> scores, Span<float> output)
    {
        int n = qNope.Length, r = qPe.Length, v = output.Length;
        if (scores.Length < count) ThrowHelper.TooShort(nameof(scores), count, scores.Length);
        if (count > 0 && kv.Length < (long)(count - 1) * kvStride + kvOffset + n + v) ThrowHelper.TooShort(nameof(kv), (long)(count - 1) * kvStride + kvOffset + n + v, kv.Length);
        if (cache.Length < (long)count * cacheStride) ThrowHelper.TooShort(nameof(cache), (long)count * cacheStride, cache.Length);
        for (int s = 0; s < count; s++)
        {
            ReadOnlySpan<float> kNope = kv.Slice(s * kvStride + kvOffset, n);
            ReadOnlySpan<float> kPe = cache.Slice(s * cacheStride + cacheStride - r, r);
            scores[s] = (Dot.Compute(qNope, kNope) + Dot.Compute(qPe, kPe)) * scale;
        }
        Span<float> p = scores[..count];
        Softmax.InPlace(p);
        output.Clear();
        for (int s = 0; s < count; s++)
            Axpy.Compute(kv.Slice(s * kvStride + kvOffset + n, v), p[s], output);
    }

    /// <summary>Whether <see cref="ExpandedQueries"/> has a vector path here (else callers use <see cref="Expanded"/>
    /// per query).</summary>
    public static bool HasBlockedPath => Vector512.IsHardwareAccelerated || (Vector256.IsHardwareAccelerated && Fma.IsSupported);

    /// <summary>Expanded MLA for one head and <paramref name="n"/> consecutive queries at positions pos0.. (query t
    /// sees positions 0..pos0 + t), as <see cref="Expanded"/> computes each but as small matrix products: keys are
    /// copied transposed in tiles of 32 positions, scores of four queries × 32 positions accumulate in registers
    /// over the key dimensions, and the values are weighted for two queries per pass over them.</summary>
    /// <param name="q">query t at t · qStride: [q_nope (N) | q_pe (R)]</param>
    /// <param name="kv">decompressed rows; row s of this head starts at s·kvStride + kvOffset: [k_nope (N) | v (V)]</param>
    /// <param name="cache">[pos0 + n, cacheStride] cached rows (k_pe is the last R of each)</param>
    /// <param name="output">query t's [<paramref name="v"/>] result at t · outStride</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void ExpandedQueries(ReadOnlySpan<float> q, int qStride, int n, int pos0, int nope, int rope, int v,
        ReadOnlySpan<float> kv, int kvStride, int kvOffset, ReadOnlySpan<float> cache, int cacheStride, float scale,
        Span<float> output, int outStride)
    {
        if (!HasBlockedPath) throw new PlatformNotSupportedException("ExpandedQueries needs AVX-512, or AVX2 with FMA");
        int span = pos0 + n, dims = nope + rope;
        if (n <= 0) return;
        if (q.Length < (long)(n - 1) * qStride + dims) ThrowHelper.TooShort(nameof(q), (long)(n - 1) * qStride + dims, q.Length);
        if (kv.Length < (long)(span - 1) * kvStride + kvOffset + nope + v) ThrowHelper.TooShort(nameof(kv), (long)(span - 1) * kvStride + kvOffset + nope + v, kv.Length);
        if (cache.Length < (long)span * cacheStride) ThrowHelper.TooShort(nameof(cache), (long)span * cacheStride, cache.Length);
        if (output.Length < (long)(n - 1) * outStride + v) ThrowHelper.TooShort(nameof(output), (long)(n - 1) * outStride + v, output.Length);

        int tiles = (span + 31) / 32;
        Span<float> kt = AttentionScratch.Keys(tiles * dims * 32), p = AttentionScratch.Probabilities(4 * tiles * 32);
        // Keys transposed: tile b, dimension d, position b·32 + i at (b · dims + d) · 32 + i; positions past the span are 0.
        for (int b = 0; b < tiles; b++)
        {
            Span<float> tile = kt.Slice(b * dims * 32, dims * 32);
            if (b * 32 + 32 > span) tile.Clear();
            for (int i = 0; i < 32 && b * 32 + i < span; i++)
            {
                int s = b * 32 + i;
                ReadOnlySpan<float> kn = kv.Slice(s * kvStride + kvOffset, nope), kp = cache.Slice(s * cacheStride + cacheStride - rope, rope);
                for (int d = 0; d < nope; d++) tile[d * 32 + i] = kn[d];
                for (int d = 0; d < rope; d++) tile[(nope + d) * 32 + i] = kp[d];
            }
        }
        fixed (float* pq = q, pk = kt, pp = p, pkv = kv, po = output)
        {
            for (int t0 = 0; t0 < n; t0 += 4)
            {
                int m = Math.Min(4, n - t0), last = pos0 + t0 + m; // positions [0, last) are seen by some query of the four
                float* q0 = pq + (long)t0 * qStride, q1 = pq + (long)(t0 + Math.Min(1, m - 1)) * qStride;
                float* q2 = pq + (long)(t0 + Math.Min(2, m - 1)) * qStride, q3 = pq + (long)(t0 + Math.Min(3, m - 1)) * qStride;
                int stride = tiles * 32;
                for (int b = 0; b * 32 < last; b++)
                {
                    if (!Vector512.IsHardwareAccelerated)
                    {
                        float* kb = pk + (long)b * dims * 32, ob = pp + b * 32;
                        TileScores256(kb, dims, q0, q1, scale, ob, ob + stride);
                        TileScores256(kb, dims, q2, q3, scale, ob + 2 * stride, ob + 3 * stride);
                        continue;
                    }
                    Vector512<float> a0 = Vector512<float>.Zero, b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
                    float* k = pk + (long)b * dims * 32;
                    for (int d = 0; d < dims; d++, k += 32)
                    {
                        Vector512<float> lo = Vector512.Load(k), hi = Vector512.Load(k + 16);
                        Vector512<float> x = Vector512.Create(q0[d]);
                        a0 = Vector512.FusedMultiplyAdd(x, lo, a0); b0 = Vector512.FusedMultiplyAdd(x, hi, b0);
                        x = Vector512.Create(q1[d]);
                        a1 = Vector512.FusedMultiplyAdd(x, lo, a1); b1 = Vector512.FusedMultiplyAdd(x, hi, b1);
                        x = Vector512.Create(q2[d]);
                        a2 = Vector512.FusedMultiplyAdd(x, lo, a2); b2 = Vector512.FusedMultiplyAdd(x, hi, b2);
                        x = Vector512.Create(q3[d]);
                        a3 = Vector512.FusedMultiplyAdd(x, lo, a3); b3 = Vector512.FusedMultiplyAdd(x, hi, b3);
                    }
                    float* o = pp + b * 32;
                    (a0 * scale).Store(o); (b0 * scale).Store(o + 16);
                    (a1 * scale).Store(o + stride); (b1 * scale).Store(o + stride + 16);
                    (a2 * scale).Store(o + 2 * stride); (b2 * scale).Store(o + 2 * stride + 16);
                    (a3 * scale).Store(o + 3 * stride); (b3 * scale).Store(o + 3 * stride + 16);
                }
                for (int i = 0; i < m; i++) Softmax.InPlace(p.Slice(i * stride, pos0 + t0 + i + 1));
                for (int i = 0; i < m; i += 2)
                {
                    // Two queries share each value row; the second sees one position more.
                    int c0 = pos0 + t0 + i + 1, c1 = i + 1 < m ? c0 + 1 : 0;
                    float* o0 = po + (long)(t0 + i) * outStride, o1 = i + 1 < m ? o0 + outStride : o0;
                    float* w0 = pp + i * stride, w1 = w0 + stride;
                    if (v == 128)
                    {
                        if (Vector512.IsHardwareAccelerated) WeightedRows128(pkv + kvOffset + nope, kvStride, w0, w1, c0, c1, o0, i + 1 < m ? o1 : null);
                        else WeightedRows128x256(pkv + kvOffset + nope, kvStride, w0, w1, c0, c1, o0, i + 1 < m ? o1 : null);
                        continue;
                    }
                    new Span<float>(o0, v).Clear();
                    if (i + 1 < m) new Span<float>(o1, v).Clear();
                    for (int s = 0; s < Math.Max(c0, c1); s++)
                    {
                        float* vr = pkv + (long)s * kvStride + kvOffset + nope;
                        float p0 = s < c0 ? w0[s] : 0f;
                        if (s < c1) WeightedPair(vr, p0, w1[s], o0, o1, v);
                        else Axpy.Compute(new ReadOnlySpan<float>(vr, v), p0, new Span<float>(o0, v));
                    }
                }
            }
        }
    }

    /// <summary>The value pass above for 128-wide values with both outputs in registers: o0 = Σ_s p0[s]·v_s over
    /// s &lt; max(c0, c1) (p0 = 0 past c0) and, when <paramref name="o1"/> is given, o1 = Σ_s p1[s]·v_s over s &lt; c1 —
    /// the same fused multiply-adds in the same order as <see cref="WeightedPair"/> and <see cref="Axpy.Compute"/>, without
    /// a load and a store of the outputs per value row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void WeightedRows128(float* values, int stride, float* p0, float* p1, int c0, int c1, float* o0, float* o1)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default, b6 = default, b7 = default;
        int rows = Math.Max(c0, c1);
        for (int s = 0; s < rows; s++)
        {
            float* vr = values + (long)s * stride;
            Vector512<float> x = Vector512.Create(s < c0 ? p0[s] : 0f);
            Vector512<float> v0 = Vector512.Load(vr), v1 = Vector512.Load(vr + 16), v2 = Vector512.Load(vr + 32), v3 = Vector512.Load(vr + 48);
            Vector512<float> v4 = Vector512.Load(vr + 64), v5 = Vector512.Load(vr + 80), v6 = Vector512.Load(vr + 96), v7 = Vector512.Load(vr + 112);
            a0 = Vector512.FusedMultiplyAdd(v0, x, a0); a1 = Vector512.FusedMultiplyAdd(v1, x, a1);
            a2 = Vector512.FusedMultiplyAdd(v2, x, a2); a3 = Vector512.FusedMultiplyAdd(v3, x, a3);
            a4 = Vector512.FusedMultiplyAdd(v4, x, a4); a5 = Vector512.FusedMultiplyAdd(v5, x, a5);
            a6 = Vector512.FusedMultiplyAdd(v6, x, a6); a7 = Vector512.FusedMultiplyAdd(v7, x, a7);
            if (s < c1)
            {
                Vector512<float> y = Vector512.Create(p1[s]);
                b0 = Vector512.FusedMultiplyAdd(v0, y, b0); b1 = Vector512.FusedMultiplyAdd(v1, y, b1);
                b2 = Vector512.FusedMultiplyAdd(v2, y, b2); b3 = Vector512.FusedMultiplyAdd(v3, y, b3);
                b4 = Vector512.FusedMultiplyAdd(v4, y, b4); b5 = Vector512.FusedMultiplyAdd(v5, y, b5);
                b6 = Vector512.FusedMultiplyAdd(v6, y, b6); b7 = Vector512.FusedMultiplyAdd(v7, y, b7);
            }
        }
        a0.Store(o0); a1.Store(o0 + 16); a2.Store(o0 + 32); a3.Store(o0 + 48); a4.Store(o0 + 64); a5.Store(o0 + 80); a6.Store(o0 + 96); a7.Store(o0 + 112);
        if (o1 == null) return;
        b0.Store(o1); b1.Store(o1 + 16); b2.Store(o1 + 32); b3.Store(o1 + 48); b4.Store(o1 + 64); b5.Store(o1 + 80); b6.Store(o1 + 96); b7.Store(o1 + 112);
    }

    /// <summary>The scores of two queries over one tile of 32 transposed key positions in 256-bit registers (AVX2): each
    /// position's lane the same fused multiply-adds over the dimensions in order as the 512-bit pass — the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void TileScores256(float* k, int dims, float* qa, float* qb, float scale, float* oa, float* ob)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (int d = 0; d < dims; d++, k += 32)
        {
            Vector256<float> k0 = Vector256.Load(k), k1 = Vector256.Load(k + 8), k2 = Vector256.Load(k + 16), k3 = Vector256.Load(k + 24);
            Vector256<float> x = Vector256.Create(qa[d]);
            a0 = Vector256.FusedMultiplyAdd(x, k0, a0); a1 = Vector256.FusedMultiplyAdd(x, k1, a1);
            a2 = Vector256.FusedMultiplyAdd(x, k2, a2); a3 = Vector256.FusedMultiplyAdd(x, k3, a3);
            x = Vector256.Create(qb[d]);
            b0 = Vector256.FusedMultiplyAdd(x, k0, b0); b1 = Vector256.FusedMultiplyAdd(x, k1, b1);
            b2 = Vector256.FusedMultiplyAdd(x, k2, b2); b3 = Vector256.FusedMultiplyAdd(x, k3, b3);
        }
        (a0 * scale).Store(oa); (a1 * scale).Store(oa + 8); (a2 * scale).Store(oa + 16); (a3 * scale).Store(oa + 24);
        (b0 * scale).Store(ob); (b1 * scale).Store(ob + 8); (b2 * scale).Store(ob + 16); (b3 * scale).Store(ob + 24);
    }

    /// <summary><see cref="WeightedRows128"/> in 256-bit registers (AVX2): 32 values of both outputs a pass over the
    /// rows, each lane the same fused multiply-adds in the same order — the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void WeightedRows128x256(float* values, int stride, float* p0, float* p1, int c0, int c1, float* o0, float* o1)
    {
        int rows = Math.Max(c0, c1);
        for (int j = 0; j < 128; j += 32)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            for (int s = 0; s < rows; s++)
            {
                float* vr = values + (long)s * stride + j;
                Vector256<float> x = Vector256.Create(s < c0 ? p0[s] : 0f);
                Vector256<float> v0 = Vector256.Load(vr), v1 = Vector256.Load(vr + 8), v2 = Vector256.Load(vr + 16), v3 = Vector256.Load(vr + 24);
                a0 = Vector256.FusedMultiplyAdd(v0, x, a0); a1 = Vector256.FusedMultiplyAdd(v1, x, a1);
                a2 = Vector256.FusedMultiplyAdd(v2, x, a2); a3 = Vector256.FusedMultiplyAdd(v3, x, a3);
                if (s < c1)
                {
                    Vector256<float> y = Vector256.Create(p1[s]);
                    b0 = Vector256.FusedMultiplyAdd(v0, y, b0); b1 = Vector256.FusedMultiplyAdd(v1, y, b1);
                    b2 = Vector256.FusedMultiplyAdd(v2, y, b2); b3 = Vector256.FusedMultiplyAdd(v3, y, b3);
                }
            }
            a0.Store(o0 + j); a1.Store(o0 + j + 8); a2.Store(o0 + j + 16); a3.Store(o0 + j + 24);
            if (o1 == null) continue;
            b0.Store(o1 + j); b1.Store(o1 + j + 8); b2.Store(o1 + j + 16); b3.Store(o1 + j + 24);
        }
    }

    /// <summary>o0 += p0 · v; o1 += p1 · v (one load of each value serves both).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void WeightedPair(float* v, float p0, float p1, float* o0, float* o1, int len)
    {
        int j = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> x0 = Vector512.Create(p0), x1 = Vector512.Create(p1);
            for (; j + 16 <= len; j += 16)
            {
                Vector512<float> vv = Vector512.Load(v + j);
                Vector512.FusedMultiplyAdd(vv, x0, Vector512.Load(o0 + j)).Store(o0 + j);
                Vector512.FusedMultiplyAdd(vv, x1, Vector512.Load(o1 + j)).Store(o1 + j);
            }
        }
        else
        {
            Vector256<float> x0 = Vector256.Create(p0), x1 = Vector256.Create(p1);
            for (; j + 8 <= len; j += 8)
            {
                Vector256<float> vv = Vector256.Load(v + j);
                Vector256.FusedMultiplyAdd(vv, x0, Vector256.Load(o0 + j)).Store(o0 + j);
                Vector256.FusedMultiplyAdd(vv, x1, Vector256.Load(o1 + j)).Store(o1 + j);
            }
        }
        for (; j < len; j++)
        {
            o0[j] = MathF.FusedMultiplyAdd(v[j], p0, o0[j]);
            o1[j] = MathF.FusedMultiplyAdd(v[j], p1, o1[j]);
        }
    }
}

/// <summary>Per-thread scratch of <see cref="LatentAttention.ExpandedQueries"/>, grown and then reused; 64-byte aligned.</summary>
internal static class AttentionScratch
{
    [ThreadStatic] private static float[]? _keys, _probabilities;

    public static Span<float> Keys(int n) => AlignedScratch.Grow(ref _keys, n);
    public static Span<float> Probabilities(int n) => AlignedScratch.Grow(ref _probabilities, n);
}

/// <summary>How the blocked absorbed kernels load cached values as float32: a row's values in chunks of 32 (in
/// <see cref="Bf16Latents"/>' layout for bfloat16), and where a row's width is an odd multiple of sixteen its last
/// sixteen in natural order. <c>half</c> and <c>quarter</c> are constants where the kernels call these (after
/// inlining, each load is one instruction's choice).</summary>
internal unsafe interface ILatentRows<T> where T : unmanaged
{
    /// <summary>Values 16·half … 16·half + 15 of the chunk at <paramref name="chunk"/>.</summary>
    static abstract Vector512<float> Load(T* chunk, [ConstantExpected(Min = 0, Max = 1)] int half);

    /// <summary>Values 8·quarter … 8·quarter + 7 of the chunk at <paramref name="chunk"/> (the AVX2 kernels).</summary>
    static abstract Vector256<float> Load256(T* chunk, [ConstantExpected(Min = 0, Max = 3)] int quarter);

    /// <summary>Sixteen values in natural order: a row's tail.</summary>
    static abstract Vector512<float> LoadTail(T* p);

    /// <summary>Eight values in natural order: half a row's tail (the AVX2 kernels).</summary>
    static abstract Vector256<float> LoadTail256(T* p);
}

/// <summary>Rows of float32.</summary>
internal readonly unsafe struct F32Rows : ILatentRows<float>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* chunk, [ConstantExpected(Min = 0, Max = 1)] int half) => Vector512.Load(chunk + 16 * half);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load256(float* chunk, [ConstantExpected(Min = 0, Max = 3)] int quarter) => Vector256.Load(chunk + 8 * quarter);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadTail(float* p) => Vector512.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadTail256(float* p) => Vector256.Load(p);
}

/// <summary>Rows of bfloat16 in <see cref="Bf16Latents"/>' layout: each value the top half of its float32 (exact).
/// A chunk read as sixteen 32-bit words holds values 0–15 in the low halves and 16–31 in the high ones, so half 0
/// is the words shifted left by 16 and half 1 the words with their low halves cleared: one instruction per sixteen
/// values (AVX2: a byte shuffle of sixteen words per eight values).</summary>
internal readonly unsafe struct Bf16Rows : ILatentRows<ushort>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(ushort* chunk, [ConstantExpected(Min = 0, Max = 1)] int half)
    {
        Vector512<uint> words = Vector512.Load((uint*)chunk);
        return (half == 0 ? words << 16 : words & Vector512.Create(0xFFFF0000u)).AsSingle();
    }

    /// <summary>Quarters 0 and 1 are the low halves of the chunk's first and last eight words, quarters 2 and 3 their
    /// high halves: each byte shuffle moves a word's half into its top two bytes and zeroes the rest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load256(ushort* chunk, [ConstantExpected(Min = 0, Max = 3)] int quarter)
    {
        byte* at = (byte*)(chunk + 16 * (quarter & 1));
        // The high quarters load with vlddqu, which the JIT does not merge with the low quarter's load of the same
        // bytes (it kept that load in a register until the high quarter's step and, with twelve sums live, spilled it).
        Vector256<byte> words = quarter < 2 ? Vector256.Load(at) : Avx.LoadDquVector256(at);
        Vector256<byte> pick = quarter < 2
            ? Vector256.Create(0x0100_8080u, 0x0504_8080u, 0x0908_8080u, 0x0D0C_8080u, 0x0100_8080u, 0x0504_8080u, 0x0908_8080u, 0x0D0C_8080u).AsByte()
            : Vector256.Create(0x0302_8080u, 0x0706_8080u, 0x0B0A_8080u, 0x0F0E_8080u, 0x0302_8080u, 0x0706_8080u, 0x0B0A_8080u, 0x0F0E_8080u).AsByte();
        return Avx2.Shuffle(words, pick).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadTail(ushort* p) => (Avx512F.ConvertToVector512UInt32(Vector256.Load(p)) << 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadTail256(ushort* p) => (Avx2.ConvertToVector256Int32(p).AsUInt32() << 16).AsSingle();
}
