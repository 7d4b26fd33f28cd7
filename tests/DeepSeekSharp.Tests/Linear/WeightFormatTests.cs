using DeepSeekSharp.Formats.Gguf;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Tests.Linear;

/// <summary>The table of weight formats: one consistent row per format, read by everything that needs a format's facts.</summary>
public class WeightFormatTests
{
    public static TheoryData<WeightFormat> AllFormats() => new(Enum.GetValues<WeightFormat>());

    [Theory]
    [MemberData(nameof(AllFormats))]
    public void EveryFormat_HasItsOwnRow(WeightFormat f)
    {
        FormatTraits t = f.Traits();
        Assert.Equal(f, t.Format);
        Assert.Equal(t.Name, t.Name.ToLowerInvariant());
        Assert.Single(WeightFormats.All, x => x.Name == t.Name);
        if (t.Ggml is { } g) Assert.Equal(f, g.Traits().Format); // GGUF type and back
    }

    [Theory]
    [InlineData(WeightFormat.F32, 1, 4)]
    [InlineData(WeightFormat.BF16, 1, 2)]
    [InlineData(WeightFormat.F16, 1, 2)]
    [InlineData(WeightFormat.FP8, 1, 1)]
    [InlineData(WeightFormat.Q8_0, 32, 34)]   // ggml-common.h: block_q8_0 = fp16 d + 32 int8
    [InlineData(WeightFormat.Q4_0, 32, 18)]   // fp16 d + 16 bytes of nibbles
    [InlineData(WeightFormat.Q4_1, 32, 20)]
    [InlineData(WeightFormat.Q5_0, 32, 22)]
    [InlineData(WeightFormat.Q5_1, 32, 24)]
    [InlineData(WeightFormat.Q2_K, 256, 84)]
    [InlineData(WeightFormat.Q3_K, 256, 110)]
    [InlineData(WeightFormat.Q4_K, 256, 144)]
    [InlineData(WeightFormat.Q5_K, 256, 176)]
    [InlineData(WeightFormat.Q6_K, 256, 210)]
    [InlineData(WeightFormat.IQ4_NL, 32, 18)]
    [InlineData(WeightFormat.IQ4_XS, 256, 136)]
    public void BlockGeometry_IsGgmls(WeightFormat f, int blockSize, int blockBytes)
    {
        Assert.Equal(blockSize, f.Traits().BlockSize);
        Assert.Equal(blockBytes, f.Traits().BlockBytes);
        Assert.Equal(3L * blockBytes, f.Traits().RowBytes(3 * blockSize));
        if (blockSize > 1) Assert.Throws<ArgumentException>(() => f.Traits().RowBytes(blockSize + 1));
    }

    [Theory]
    [MemberData(nameof(AllFormats))]
    public void WrappedMatrix_ReportsItsFormatAndRowBytes(WeightFormat f)
    {
        FormatTraits t = f.Traits();
        if (t.Wrap is null) return; // FP8 needs its block scales (Matrix.CreateFp8)
        int cols = 2 * Math.Max(t.BlockSize, 32) * (t.BlockSize == 256 ? 1 : 8);
        using Matrix m = Matrix.Create(f, 3, cols, tiles: false);
        Assert.Equal(f, m.Format);
        Assert.Equal(t.RowBytes(cols), m.RowBytes);
    }

    [Theory]
    [MemberData(nameof(AllFormats))]
    public void EmptyMatrix_IsMade_AndItsProductIsEmpty(WeightFormat f)
    {
        FormatTraits t = f.Traits();
        if (t.Wrap is null) return; // FP8 needs its block scales (Matrix.CreateFp8)
        using Matrix noRows = Matrix.Create(f, 0, 256, tiles: false);
        noRows.Forward(new float[2 * 256], Span<float>.Empty, 2);
        using Matrix noCols = Matrix.Create(f, 3, 0, tiles: false);
        float[] y = [float.NaN, float.NaN, float.NaN];
        noCols.Forward(Span<float>.Empty, y, 1);
        Assert.Equal([0f, 0f, 0f], y); // an empty sum
    }

    [Fact]
    public void Parse_AcceptsTheCommandLineNames_AndNamesTheChoicesOtherwise()
    {
        Assert.Equal(WeightFormat.Q4_K, WeightFormats.Parse("q4_k", WeightFormats.LoadTargets));
        Assert.Equal(WeightFormat.Q5_K, WeightFormats.Parse("Q5_K", WeightFormats.LoadTargets));
        Assert.Equal(WeightFormat.Q4_0, WeightFormats.Parse("q4_0", WeightFormats.LoadTargets));
        var e = Assert.Throws<ArgumentException>(() => WeightFormats.Parse("q3_k", WeightFormats.LoadTargets));
        Assert.Contains("q8_0, q4_0, q4_k, q5_k, q6_k, bf16, f32", e.Message);
    }

    /// <summary><c>--quantize</c>'s format for a matrix whose rows do not fill the format's blocks is llama-quantize's
    /// fallback (V2-Lite's 1,408-wide expert down_proj, a GGUF's 128-wide attn_k_b), then Q8_0, then F32; a matrix that
    /// is not to be quantised keeps its stored format.</summary>
    [Fact]
    public void LoadTimeQuantisation_FallsBackAsLlamaQuantizeDoes()
    {
        static WeightFormat For(WeightFormat q, int cols, bool quantizable = true) =>
            new LoadOptions { Quantize = q }.FormatFor(WeightFormat.BF16, cols, quantizable);
        Assert.Equal(WeightFormat.Q4_K, For(WeightFormat.Q4_K, 2048));
        Assert.Equal(WeightFormat.Q5_0, For(WeightFormat.Q4_K, 1408));
        Assert.Equal(WeightFormat.Q5_0, For(WeightFormat.Q4_K, 128));
        Assert.Equal(WeightFormat.Q5_1, For(WeightFormat.Q5_K, 1408));
        Assert.Equal(WeightFormat.Q8_0, For(WeightFormat.Q6_K, 1408));
        Assert.Equal(WeightFormat.Q8_0, For(WeightFormat.Q8_0, 1408));
        Assert.Equal(WeightFormat.F32, For(WeightFormat.Q4_K, 1400)); // no block of 32 fits either
        Assert.Equal(WeightFormat.F32, For(WeightFormat.Q4_0, 100));
        Assert.Equal(WeightFormat.BF16, For(WeightFormat.Q4_K, 1408, quantizable: false));
        Assert.Equal(WeightFormat.BF16, new LoadOptions().FormatFor(WeightFormat.BF16, 1408, quantizable: true));
    }

    [Fact]
    public void GgufFileTypes_ParseLlamaQuantizesNames_WithItsAliasesForTheMediumMixes()
    {
        Assert.Equal(GgufFileType.Q8_0, GgufFileType.Parse("Q8_0"));
        Assert.Equal(GgufFileType.Q4_K_M, GgufFileType.Parse("q4_k_m"));
        Assert.Equal(GgufFileType.Q3_K_L, GgufFileType.Parse("Q3_K_L"));
        // llama-quantize's QUANT_OPTIONS: "Q3_K", "Q4_K", "Q5_K" are aliases of the M mixes.
        Assert.Equal(GgufFileType.Q3_K_M, GgufFileType.Parse("q3_k"));
        Assert.Equal(GgufFileType.Q4_K_M, GgufFileType.Parse("q4_k"));
        Assert.Equal(GgufFileType.Q5_K_M, GgufFileType.Parse("Q5_K"));
        // Converting "into a format" takes the mix that keeps the most tensors in it.
        Assert.Equal(GgufFileType.Q4_K_S, GgufFileType.For(WeightFormat.Q4_K));
        Assert.Equal(GgufFileType.Q3_K_S, GgufFileType.For(WeightFormat.Q3_K));
        // llama.cpp's enum llama_ftype
        Assert.Equal([0u, 1, 32, 7, 2, 10, 11, 12, 13, 14, 15, 16, 17, 18], GgufFileType.All.Select(t => t.Id));
        var e = Assert.Throws<ArgumentException>(() => GgufFileType.Parse("q2_k_s"));
        Assert.Contains("q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m", e.Message);
    }

    [Fact]
    public void SafeTensorsNames_MapToElementFormats()
    {
        Assert.Equal(WeightFormat.FP8, WeightFormats.FromSafeTensorsName("F8_E4M3"));
        Assert.Equal(WeightFormat.BF16, WeightFormats.FromSafeTensorsName("BF16"));
        Assert.Null(WeightFormats.FromSafeTensorsName("I64"));
        Assert.Equal("F32, BF16, F16, F8_E4M3", WeightFormats.SupportedSafeTensorsNames);
        Assert.Equal(1, WeightFormat.FP8.ElementBytes());
        Assert.Throws<ArgumentOutOfRangeException>(() => WeightFormat.Q8_0.ElementBytes());
    }

    [Fact]
    public void UnsupportedGgmlType_ThrowsNamingTheTensorAndTheSupportedTypes()
    {
        var e = Assert.Throws<NotSupportedException>(() => GgmlType.IQ2_XXS.Traits("blk.0.ffn_down_exps.weight"));
        Assert.Contains("blk.0.ffn_down_exps.weight", e.Message);
        Assert.Contains("IQ2_XXS", e.Message);
        Assert.Contains("Q4_K", e.Message);
    }
}
