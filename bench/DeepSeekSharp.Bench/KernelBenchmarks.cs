using DeepSeekSharp.Linear;
using BenchmarkDotNet.Attributes;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Bench;

/// <summary>One row dot product per weight format at DeepSeek-V2-Lite's hidden size (2048).
/// <c>dotnet run -c Release --project bench/DeepSeekSharp.Bench -- kernels --filter *RowDot*</c></summary>
[MemoryDiagnoser]
public class RowDotBenchmarks
{
    private const int N = 2048;
    private float[] _x = [], _wf = [];
    private ushort[] _wb = [];
    private BlockQ8_0[] _w8 = [];
    private BlockQ4K[] _w4 = [];
    private QuantizedActivations _act = new(), _actK = new();

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        _x = Enumerable.Range(0, N).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _wf = Enumerable.Range(0, N).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _wb = _wf.Select(NumberFormats.FloatToBF16).ToArray();
        _w8 = new BlockQ8_0[N / 32];
        Q8_0.QuantizeRow(_wf, _w8);
        _w4 = new BlockQ4K[N / 256];
        Q4K.QuantizeRow(_wf, _w4);
        _act.Quantize(_x, 1, N);
        _actK.QuantizeK(_x, 1, N);
    }

    [Benchmark(Baseline = true)] public float F32() => Dot.Compute(_wf, _x);
    [Benchmark] public float BF16() => Bf16Dot.Compute(_wb, _x);
    [Benchmark] public float Q8_0Q8() => Q8_0.VecDotQ8_0Q8(_w8, _act.Q.AsSpan(0, N), _act.D.AsSpan(0, N / 32));
    [Benchmark] public float Q4KQ8K() => Q4K.VecDotQ4KQ8K(_w4, _actK.Q.AsSpan(0, N), _actK.D.AsSpan(0, N / 256), _actK.BlockSum.AsSpan(0, N / 32));
    [Benchmark] public void QuantizeActivations() => _act.Quantize(_x, 1, N);
}

/// <summary>A [1408, 2048] expert projection (one token, decode) per format, through the worker pool.</summary>
[MemoryDiagnoser]
public class MatVecBenchmarks
{
    private Matrix _f32 = null!, _bf16 = null!, _q8 = null!, _q4 = null!;
    private float[] _x = [], _y = new float[1408];

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(2);
        float[] w = Enumerable.Range(0, 1408 * 2048).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _x = Enumerable.Range(0, 2048).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _f32 = Matrix.FromValues(1408, 2048, w);
        _bf16 = Matrix.FromValues(1408, 2048, w, WeightFormat.BF16);
        _q8 = Matrix.FromValues(1408, 2048, w, WeightFormat.Q8_0);
        _q4 = Matrix.FromValues(1408, 2048, w, WeightFormat.Q4_K);
    }

    [Benchmark(Baseline = true)] public void F32() => _f32.Forward(_x, _y, 1);
    [Benchmark] public void BF16() => _bf16.Forward(_x, _y, 1);
    [Benchmark] public void Q8_0() => _q8.Forward(_x, _y, 1);
    [Benchmark] public void Q4_K() => _q4.Forward(_x, _y, 1);
}

/// <summary>The same projection for a batch of tokens — about one expert's share of a 512-token prefill, and a whole
/// prompt — which the AVX-512 panel kernels take (the row kernels where AVX-512 is off).</summary>
[MemoryDiagnoser]
public class MatMulBenchmarks
{
    private Matrix _q8 = null!, _q4 = null!;
    private float[] _x = [], _y = [];

    [Params(48, 512)] public int Tokens;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(3);
        float[] w = Enumerable.Range(0, 1408 * 2048).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _x = Enumerable.Range(0, Tokens * 2048).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _y = new float[Tokens * 1408];
        _q8 = Matrix.FromValues(1408, 2048, w, WeightFormat.Q8_0);
        _q4 = Matrix.FromValues(1408, 2048, w, WeightFormat.Q4_K);
    }

    [Benchmark(Baseline = true)] public void Q8_0() => _q8.Forward(_x, _y, Tokens);
    [Benchmark] public void Q4_K() => _q4.Forward(_x, _y, Tokens);
}

/// <summary>Softmax over an attention row of 512 scores (after the max is subtracted: values in [−3, 0]), against
/// the library exp alone, warmed up.</summary>
public class SoftmaxBenchmarks
{
    private readonly float[] _scores = Enumerable.Range(0, 512).Select(i => (float)(new Random(i).NextDouble() * 3 - 3)).ToArray();
    private readonly float[] _work = new float[512];

    [Benchmark(Baseline = true)]
    public void Softmax()
    {
        _scores.CopyTo(_work, 0);
        DeepSeekSharp.Kernels.Softmax.InPlace(_work);
    }

    [Benchmark]
    public void TensorPrimitivesExp()
    {
        _scores.CopyTo(_work, 0);
        System.Numerics.Tensors.TensorPrimitives.Exp(_work, _work);
    }
}
