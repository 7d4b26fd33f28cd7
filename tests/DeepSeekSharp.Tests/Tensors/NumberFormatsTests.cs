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
