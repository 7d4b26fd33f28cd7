using System.Numerics.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>In-place numerically stable softmax over one row.</summary>
public static class Softmax
{
    public static void InPlace(Span<float> x)
    {
        if (x.IsEmpty) return;
        float max = TensorPrimitives.Max(x);
        float sum = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float e = MathF.Exp(x[i] - max);
            x[i] = e;
            sum += e;
        }
        TensorPrimitives.Multiply(x, 1f / sum, x);
    }
}
