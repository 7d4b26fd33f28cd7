namespace DeepSeekSharp.Kernels.Quant;

/// <summary>fp16 → float32 for every 16-bit pattern (256 KB), so block scales convert with one load.</summary>
internal static class HalfTable
{
    public static readonly float[] Values = Build();

    private static float[] Build()
    {
        var t = new float[65536];
        for (int i = 0; i < t.Length; i++) t[i] = (float)BitConverter.UInt16BitsToHalf((ushort)i);
        return t;
    }

    public static ushort FromFloat(float f) => BitConverter.HalfToUInt16Bits((Half)f);
}
