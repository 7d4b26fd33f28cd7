using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Kernels;

/// <summary>The float32 matrix products of training, for a linear layer y[t] = W x[t] (W [rows, cols] row-major, n
/// tokens):
/// <list type="bullet">
/// <item><see cref="ForwardTransposed"/>: Y = X Wᵀ (from Wᵀ), or <see cref="ForwardByDots"/> for a few tokens;</item>
/// <item><see cref="BackwardData"/>: dX += dY W;</item>
/// <item><see cref="BackwardWeight"/>: dW += dYᵀ X (llm.c's matmul_backward).</item>
/// </list>
/// All three are one kernel, C[i, j] (+)= Σ_p A[i, p] · B[p, j] with B's rows contiguous: each element of C is one
/// chain of fused multiply-adds over p in ascending order, whatever the tile it falls in, the vector width's tail or
/// the thread that computes it, so results are bit-identical for any thread count (and the scalar path,
/// <see cref="Reference"/>, is the specification). The forward reads Wᵀ so that it, too, reads B by rows; products of
/// fewer than <see cref="DotBelow"/> tokens are better done with one fixed-order dot product per element.</summary>
public static unsafe class Gemm
{
    /// <summary>Below this many tokens a forward product is cheaper by dots than through Wᵀ.</summary>
    public const int DotBelow = 8;
    private const int TileRows = 4, RowBlock = 64, DepthBlock = 256;

    /// <summary>y[n, rows] = x[n, cols] · wᵀ, overwriting y, given wᵀ [cols, rows] (a trainer transposes each weight
    /// once per optimizer step).</summary>
    public static void ForwardTransposed(ReadOnlySpan<float> x, ReadOnlySpan<float> wt, Span<float> y, int n, int rows, int cols)
    {
        Check(x, (long)n * cols, nameof(x)); Check(wt, (long)rows * cols, nameof(wt)); Check(y, (long)n * rows, nameof(y));
        if (n == 0 || rows == 0) return;
        if (cols == 0) { y.Clear(); return; }
        fixed (float* px = x, pwt = wt, py = y)
            Run(px, cols, 1, pwt, rows, py, rows, n, rows, cols, accumulate: false);
    }

    /// <summary>y[t, o] = <see cref="Dot.Compute"/>(x[t], w[o]): the form for a handful of tokens.</summary>
    public static void ForwardByDots(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int n, int rows, int cols)
    {
        Check(x, (long)n * cols, nameof(x)); Check(w, (long)rows * cols, nameof(w)); Check(y, (long)n * rows, nameof(y));
        for (int t = 0; t < n; t++)
            for (int o = 0; o < rows; o++)
                y[t * rows + o] = Dot.Compute(x.Slice(t * cols, cols), w.Slice(o * cols, cols));
    }

    /// <summary>dx[n, cols] += dy[n, rows] · w.</summary>
    public static void BackwardData(Span<float> dx, ReadOnlySpan<float> dy, ReadOnlySpan<float> w, int n, int rows, int cols)
    {
        Check(dx, (long)n * cols, nameof(dx)); Check(dy, (long)n * rows, nameof(dy)); Check(w, (long)rows * cols, nameof(w));
        if (n == 0 || cols == 0 || rows == 0) return;
        fixed (float* pdx = dx, pdy = dy, pw = w)
            Run(pdy, rows, 1, pw, cols, pdx, cols, n, cols, rows, accumulate: true);
    }

    /// <summary>dw[rows, cols] += dy[n, rows]ᵀ · x[n, cols], tokens added in order.</summary>
    public static void BackwardWeight(Span<float> dw, ReadOnlySpan<float> dy, ReadOnlySpan<float> x, int n, int rows, int cols)
    {
        Check(dw, (long)rows * cols, nameof(dw)); Check(dy, (long)n * rows, nameof(dy)); Check(x, (long)n * cols, nameof(x));
        if (n == 0 || cols == 0 || rows == 0) return;
        fixed (float* pdw = dw, pdy = dy, px = x)
            Run(pdy, 1, rows, px, cols, pdw, cols, rows, cols, n, accumulate: true);
    }

    /// <summary>The specification of the kernel: C[i, j] = fma chain over p of A[i, p] · B[p, j], from C (accumulate) or 0.</summary>
    internal static void Reference(ReadOnlySpan<float> a, long aRow, long aCol, ReadOnlySpan<float> b, long bRow, Span<float> c, long cRow,
        int m, int nCols, int depth, bool accumulate)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < nCols; j++)
            {
                float acc = accumulate ? c[(int)(i * cRow + j)] : 0f;
                for (int p = 0; p < depth; p++) acc = MathF.FusedMultiplyAdd(a[(int)(i * aRow + p * aCol)], b[(int)(p * bRow + j)], acc);
                c[(int)(i * cRow + j)] = acc;
            }
    }

    private static void Check(ReadOnlySpan<float> s, long length, string name)
    {
        if (s.Length != length) ThrowHelper.LengthMismatch(name, length, s.Length);
    }

    /// <summary>The widest vectors this CPU runs the kernel in (0: scalar); 128-bit only with a hardware FMA.</summary>
    private static int Width => Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : Simd128.IsFast ? 128 : 0;

    private static void Run(float* a, long aRow, long aCol, float* b, long bRow, float* c, long cRow, int m, int nCols, int depth, bool accumulate)
    {
        var job = GemmJob.Rent();
        int chunks = job.Set(a, aRow, aCol, b, bRow, c, cRow, m, nCols, depth, accumulate, Width);
        WorkerPool.Shared.Run(job, chunks);
        job.Clear();
    }

    /// <summary>The kernel in <paramref name="width"/>-bit vectors (512, 256, 128; 0 scalar) on the calling thread, for
    /// tests of every width the CPU can run whatever <see cref="Width"/> picks (C as in <see cref="Reference"/>).</summary>
    internal static void RunAt(int width, ReadOnlySpan<float> a, long aRow, long aCol, ReadOnlySpan<float> b, long bRow, Span<float> c, long cRow,
        int m, int nCols, int depth, bool accumulate)
    {
        var job = new GemmJob();
        fixed (float* pa = a, pb = b, pc = c)
        {
            int chunks = job.Set(pa, aRow, aCol, pb, bRow, pc, cRow, m, nCols, depth, accumulate, width);
            for (int chunk = 0; chunk < chunks; chunk++) job.Execute(chunk);
        }
    }

    private sealed class GemmJob : PoolJob
    {
        [ThreadStatic] private static GemmJob? _mine;
        private float* _a, _b, _c;
        private long _aRow, _aCol, _bRow, _cRow;
        private int _m, _n, _depth, _panel, _blocks, _width;
        private bool _accumulate;

        public static GemmJob Rent() => _mine ??= new GemmJob();

        /// <summary>Takes the product's operands and returns its number of chunks: panels of columns (wide enough to keep
        /// B's panel in L2) × blocks of RowBlock rows of C.</summary>
        public int Set(float* a, long aRow, long aCol, float* b, long bRow, float* c, long cRow, int m, int n, int depth, bool accumulate, int width)
        {
            _width = width;
            _a = a; _b = b; _c = c;
            (_aRow, _aCol, _bRow, _cRow) = (aRow, aCol, bRow, cRow);
            (_m, _n, _depth, _accumulate) = (m, n, depth, accumulate);
            _panel = Math.Min(n, width == 512 ? 128 : 64);
            _blocks = (m + RowBlock - 1) / RowBlock;
            return (n + _panel - 1) / _panel * _blocks;
        }

        public void Clear() { _a = null; _b = null; _c = null; }

        // The depth is walked in blocks so that B's [DepthBlock, panel] block stays in cache for every row tile; C holds
        // the running sums between blocks, which changes nothing in the arithmetic (a float stores exactly).

        public override void Execute(int chunk)
        {
            int j0 = chunk / _blocks * _panel, i0 = chunk % _blocks * RowBlock;
            int j1 = Math.Min(_n, j0 + _panel), i1 = Math.Min(_m, i0 + RowBlock);
            for (int p0 = 0; p0 < _depth; p0 += DepthBlock)
            {
                int p1 = Math.Min(_depth, p0 + DepthBlock);
                bool load = _accumulate || p0 > 0;
                switch (_width)
                {
                    case 512: Block<Simd512, Vector512<float>>(i0, i1, j0, j1, p0, p1, load); break;
                    case 256: Block<Simd256, Vector256<float>>(i0, i1, j0, j1, p0, p1, load); break;
                    case 128: Block<Simd128, Vector128<float>>(i0, i1, j0, j1, p0, p1, load); break;
                    default: ScalarBlock(i0, i1, j0, j1, p0, p1, load); break;
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Block<TS, TV>(int i0, int i1, int j0, int j1, int p0, int p1, bool load) where TS : ISimd<TV> where TV : struct
        {
            int w = TS.Count, j = j0;
            for (; j + 2 * w <= j1; j += 2 * w)
            {
                int i = i0;
                for (; i + TileRows <= i1; i += TileRows) Tile4x2<TS, TV>(i, j, p0, p1, load);
                for (; i < i1; i++) Tile1x2<TS, TV>(i, j, p0, p1, load);
            }
            for (; j + w <= j1; j += w)
                for (int i = i0; i < i1; i++) Tile1x1<TS, TV>(i, j, p0, p1, load);
            if (j < j1) ScalarBlock(i0, i1, j, j1, p0, p1, load);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Tile4x2<TS, TV>(int i, int j, int p0, int p1, bool load) where TS : ISimd<TV> where TV : struct
        {
            int w = TS.Count;
            float* c0 = _c + i * _cRow + j, c1 = c0 + _cRow, c2 = c1 + _cRow, c3 = c2 + _cRow;
            TV z = TS.Zero;
            TV s00 = z, s01 = z, s10 = z, s11 = z, s20 = z, s21 = z, s30 = z, s31 = z;
            if (load)
            {
                s00 = TS.Load(ref *c0, 0); s01 = TS.Load(ref *c0, (nuint)w);
                s10 = TS.Load(ref *c1, 0); s11 = TS.Load(ref *c1, (nuint)w);
                s20 = TS.Load(ref *c2, 0); s21 = TS.Load(ref *c2, (nuint)w);
                s30 = TS.Load(ref *c3, 0); s31 = TS.Load(ref *c3, (nuint)w);
            }
            float* a0 = _a + i * _aRow + p0 * _aCol, a1 = a0 + _aRow, a2 = a1 + _aRow, a3 = a2 + _aRow;
            float* bp = _b + p0 * _bRow + j;
            long aCol = _aCol, bRow = _bRow;
            for (int p = p0; p < p1; p++)
            {
                TV b0 = TS.Load(ref *bp, 0), b1 = TS.Load(ref *bp, (nuint)w);
                TV x0 = TS.Broadcast(*a0), x1 = TS.Broadcast(*a1), x2 = TS.Broadcast(*a2), x3 = TS.Broadcast(*a3);
                s00 = TS.Fma(x0, b0, s00); s01 = TS.Fma(x0, b1, s01);
                s10 = TS.Fma(x1, b0, s10); s11 = TS.Fma(x1, b1, s11);
                s20 = TS.Fma(x2, b0, s20); s21 = TS.Fma(x2, b1, s21);
                s30 = TS.Fma(x3, b0, s30); s31 = TS.Fma(x3, b1, s31);
                a0 += aCol; a1 += aCol; a2 += aCol; a3 += aCol; bp += bRow;
            }
            TS.Store(s00, ref *c0, 0); TS.Store(s01, ref *c0, (nuint)w);
            TS.Store(s10, ref *c1, 0); TS.Store(s11, ref *c1, (nuint)w);
            TS.Store(s20, ref *c2, 0); TS.Store(s21, ref *c2, (nuint)w);
            TS.Store(s30, ref *c3, 0); TS.Store(s31, ref *c3, (nuint)w);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Tile1x2<TS, TV>(int i, int j, int p0, int p1, bool load) where TS : ISimd<TV> where TV : struct
        {
            int w = TS.Count;
            float* c0 = _c + i * _cRow + j, a0 = _a + i * _aRow + p0 * _aCol, bp = _b + p0 * _bRow + j;
            TV s0 = load ? TS.Load(ref *c0, 0) : TS.Zero, s1 = load ? TS.Load(ref *c0, (nuint)w) : TS.Zero;
            for (int p = p0; p < p1; p++)
            {
                TV x = TS.Broadcast(*a0);
                s0 = TS.Fma(x, TS.Load(ref *bp, 0), s0);
                s1 = TS.Fma(x, TS.Load(ref *bp, (nuint)w), s1);
                a0 += _aCol; bp += _bRow;
            }
            TS.Store(s0, ref *c0, 0); TS.Store(s1, ref *c0, (nuint)w);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Tile1x1<TS, TV>(int i, int j, int p0, int p1, bool load) where TS : ISimd<TV> where TV : struct
        {
            float* c0 = _c + i * _cRow + j, a0 = _a + i * _aRow + p0 * _aCol, bp = _b + p0 * _bRow + j;
            TV s0 = load ? TS.Load(ref *c0, 0) : TS.Zero;
            for (int p = p0; p < p1; p++)
            {
                s0 = TS.Fma(TS.Broadcast(*a0), TS.Load(ref *bp, 0), s0);
                a0 += _aCol; bp += _bRow;
            }
            TS.Store(s0, ref *c0, 0);
        }

        private void ScalarBlock(int i0, int i1, int j0, int j1, int p0, int p1, bool load)
        {
            for (int i = i0; i < i1; i++)
                for (int j = j0; j < j1; j++)
                {
                    float* cij = _c + i * _cRow + j;
                    float acc = load ? *cij : 0f;
                    float* a0 = _a + i * _aRow + p0 * _aCol, bp = _b + p0 * _bRow + j;
                    for (int p = p0; p < p1; p++, a0 += _aCol, bp += _bRow) acc = MathF.FusedMultiplyAdd(*a0, *bp, acc);
                    *cij = acc;
                }
        }
    }
}
