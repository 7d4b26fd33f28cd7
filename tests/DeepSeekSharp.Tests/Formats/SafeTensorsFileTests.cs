using DeepSeekSharp.Linear;
using DeepSeekSharp.Formats.SafeTensors;
using DeepSeekSharp.Tensors;
using static DeepSeekSharp.Tests.SafeTensorsWriter;

namespace DeepSeekSharp.Tests.Formats;

public class SafeTensorsFileTests
{
    private static readonly Entry A = new("a", "F32", [2, 2], F32(1, 2, 3, 4));
    private static readonly Entry B = new("b", "BF16", [3], [0x80, 0x3F, 0x00, 0x40, 0x40, 0xC0]);

    [Fact]
    public void Open_WellFormedFile_ReadsEveryTensorAndItsValues()
    {
        using var dir = new TempDir();
        Write(dir.File("m.safetensors"), [A, B]);
        using SafeTensorsFile f = SafeTensorsFile.Open(dir.File("m.safetensors"));
        Assert.Equal(["a", "b"], f.Tensors.Keys.Order());
        Assert.Equal(WeightFormat.BF16, f.Tensors["b"].Format);
        var values = new float[3];
        NumberFormats.ToFloat(WeightFormat.BF16, f.GetBytes(f.Tensors["b"]), values);
        Assert.Equal([1f, 2f, -3f], values);
        Assert.Equal("pt", f.Metadata["format"]);
    }

    private static Exception OpenFails(Action<string> write)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        write(path);
        return Record.Exception(() => SafeTensorsFile.Open(path).Dispose())!;
    }

    [Fact]
    public void Open_FileShorterThanLengthField_ThrowsTruncated()
    {
        Exception e = OpenFails(p => File.WriteAllBytes(p, [1, 2, 3]));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("bad.safetensors", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void Open_HeaderLongerThanFile_ThrowsTruncated()
    {
        Exception e = OpenFails(p => File.WriteAllBytes(p, [.. BitConverter.GetBytes(1000L), .. "{}"u8.ToArray()]));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("header length 1000", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void Open_HeaderNotJson_ThrowsNamingTheFile()
    {
        Exception e = OpenFails(p => File.WriteAllBytes(p, [.. BitConverter.GetBytes(8L), .. "not json"u8.ToArray()]));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("bad.safetensors: header is not valid JSON", e.Message);
    }

    [Fact]
    public void Open_DataCutShort_ThrowsOffsetsOutsideFileNamingTheTensor()
    {
        Exception e = OpenFails(p => Write(p, [A, B], truncateDataBy: 2));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("tensor 'b'", e.Message);
        Assert.Contains("outside the file", e.Message);
    }

    [Fact]
    public void Open_OverlappingTensors_ThrowsNamingBoth()
    {
        Exception e = OpenFails(p => Write(p, [A, new Entry("c", "F32", [2], F32(5, 6), Offsets: [8, 16])]));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("'a'", e.Message);
        Assert.Contains("'c'", e.Message);
        Assert.Contains("overlap", e.Message);
    }

    [Fact]
    public void Open_SizeNotShapeTimesDType_ThrowsWithExpectedAndFoundBytes()
    {
        Exception e = OpenFails(p => Write(p, [new Entry("w", "F32", [3, 2], F32(1, 2, 3, 4))]));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("tensor 'w'", e.Message);
        Assert.Contains("span 16 bytes", e.Message);
        Assert.Contains("needs 24", e.Message);
    }

    [Fact]
    public void Open_UnknownDType_ThrowsNotSupportedListingSupported()
    {
        Exception e = OpenFails(p => Write(p, [new Entry("w", "I64", [1], new byte[8])]));
        Assert.IsType<NotSupportedException>(e);
        Assert.Contains("tensor 'w'", e.Message);
        Assert.Contains("'I64'", e.Message);
        Assert.Contains("F8_E4M3", e.Message);
    }

    [Fact]
    public void Open_NegativeShape_ThrowsNamingTheTensor()
    {
        Exception e = OpenFails(p => Write(p, [new Entry("w", "F32", [-1], F32(1))]));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("tensor 'w'", e.Message);
        Assert.Contains("non-negative", e.Message);
    }
}
