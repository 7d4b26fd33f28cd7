using System.Numerics.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>In-place numerically stable softmax over one row (vectorised: exp(x − max), then a scale by 1 / Σ).</summary>
public static class Softmax
{
    public static void InPlace(Span<float> x)
    {
        if (x.IsEmpty) return;
        float max = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, max, x);
        TensorPrimitives.Exp(x, x);
        TensorPrimitives.Multiply(x, 1f / TensorPrimitives.Sum(x), x);
    }
}
