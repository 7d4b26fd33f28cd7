using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Tensors;

public class NumberFormatsTests
{
    [Theory]
    [InlineData(0x00, 0f)]
    [InlineData(0x38, 1f)]          // exponent 7 = bias
    [InlineData(0xB8, -1f)]
    [InlineData(0x7E, 448f)]        // largest finite: 1.75 · 2^8
    [InlineData(0xFE, -448f)]
    [InlineData(0x01, 0.001953125f)] // smallest subnormal 2^-9
    [InlineData(0x07, 7 * 0.001953125f)]
    [InlineData(0x08, 0.015625f)]   // smallest normal 2^-6
    [InlineData(0x3C, 1.5f)]
    public void F8E4M3_DecodesKnownCodes(int code, float expected)
    {
        Assert.Equal(expected, NumberFormats.F8E4M3ToFloat((byte)code));
    }

    [Fact]
    public void F8E4M3_OnlyAllOnesCodesAreNaN_AndThereAreNoInfinities()
    {
        for (int code = 0; code < 256; code++)
        {
            float v = NumberFormats.F8E4M3ToFloat((byte)code);
            Assert.False(float.IsInfinity(v));
            Assert.Equal(code is 0x7F or 0xFF, float.IsNaN(v));
            Assert.Equal(NumberFormats.F8E4M3ToFloatSpec((byte)code), v);
        }
    }

    [Fact]
    public void F8E4M3_Encoding_RoundTripsEveryCode_RoundsHalfwayToEven_AndSaturates()
    {
        for (int code = 0; code < 256; code++)
            if ((code & 0x7F) != 0x7F) Assert.Equal((byte)code, NumberFormats.FloatToF8E4M3(NumberFormats.F8E4M3ToFloat((byte)code)));
        Assert.Equal((byte)0x38, NumberFormats.FloatToF8E4M3(1f + 1f / 16));       // halfway 1 (0x38) – 1.125 (0x39): even
        Assert.Equal((byte)0x3A, NumberFormats.FloatToF8E4M3(1.125f + 1f / 16));   // halfway 0x39 – 0x3A: even
        Assert.Equal((byte)0x39, NumberFormats.FloatToF8E4M3(1f + 1f / 16 + 1e-4f)); // past halfway
        Assert.Equal((byte)0x01, NumberFormats.FloatToF8E4M3(0.75f * 0.001953125f)); // subnormal m = 0.75 → 1
        Assert.Equal((byte)0x00, NumberFormats.FloatToF8E4M3(0.5f * 0.001953125f));  // halfway 0 – 2^-9: even
        Assert.Equal((byte)0x7E, NumberFormats.FloatToF8E4M3(1e6f));
        Assert.Equal((byte)0x7E, NumberFormats.FloatToF8E4M3(464.1f));                // past halfway to 480 (which would be 0x7F)
        Assert.Equal((byte)0x7E, NumberFormats.FloatToF8E4M3(float.MaxValue));
        Assert.Equal((byte)0xFE, NumberFormats.FloatToF8E4M3(float.NegativeInfinity));
        Assert.Equal((byte)0xFE, NumberFormats.FloatToF8E4M3(-500f));
        Assert.Equal((byte)0xB8, NumberFormats.FloatToF8E4M3(-1f));
        Assert.Equal((byte)0x7F, NumberFormats.FloatToF8E4M3(float.NaN));
        // Against the nearest code found by search over all positive codes (ties: the even code), every magnitude range.
        var rng = new Random(4);
        for (int i = 0; i < 20000; i++)
        {
            float v = (float)(Math.Pow(2, rng.NextDouble() * 22 - 12) * (rng.Next(2) == 0 ? 1 : -1));
            float a = Math.Abs(v);
            int best = 0;
            for (int c = 1; c <= 0x7E; c++)
            {
                float d = Math.Abs(NumberFormats.F8E4M3ToFloat((byte)c) - a), e = Math.Abs(NumberFormats.F8E4M3ToFloat((byte)best) - a);
                if (d < e || (d == e && (c & 1) == 0)) best = c;
            }
            Assert.Equal((byte)(best | (v < 0 ? 0x80 : 0)), NumberFormats.FloatToF8E4M3(v));
        }
    }

    [Fact]
    public void BF16_IsTheTopHalfOfFloat32_AndRoundsToNearestEven()
    {
        Assert.Equal(1f, NumberFormats.BF16ToFloat(0x3F80));
        Assert.Equal(-2f, NumberFormats.BF16ToFloat(0xC000));
        // bf16's ulp at 1 is 2^-7, so 1 + 2^-8 lies halfway between 0x3F80 and 0x3F81.
        Assert.Equal((ushort)0x3F80, NumberFormats.FloatToBF16(1f + 1f / 256));              // tie → even (down)
        Assert.Equal((ushort)0x3F82, NumberFormats.FloatToBF16(1f + 3f / 256));              // tie → even (up)
        Assert.Equal((ushort)0x3F81, NumberFormats.FloatToBF16(1f + 1f / 128 + 1f / 2048)); // below halfway → down
        Assert.Equal((ushort)0x3F82, NumberFormats.FloatToBF16(1f + 1f / 128 + 3f / 512));  // above halfway → up
    }

    [Fact]
    public void ToFloat_ConvertsEachDType()
    {
        var dst = new float[2];
        NumberFormats.ToFloat(WeightFormat.F16, [0x00, 0x3C, 0x00, 0xC0], dst); // 1.0, -2.0
        Assert.Equal([1f, -2f], dst);
        NumberFormats.ToFloat(WeightFormat.F32, [.. BitConverter.GetBytes(0.5f), .. BitConverter.GetBytes(-3f)], dst);
        Assert.Equal([0.5f, -3f], dst);
        NumberFormats.ToFloat(WeightFormat.FP8, [0x38, 0x7E], dst);
        Assert.Equal([1f, 448f], dst);
        Assert.Throws<ArgumentException>(() => NumberFormats.ToFloat(WeightFormat.BF16, [0x80], dst));
    }
}
