using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>The CPU family the tile kernels' prefetch choice rests on is decoded as AMD and Intel define it, and agrees
/// with what the operating system reports.</summary>
public class CpuModelTests
{
    [Theory]
    [InlineData(0x00A10F11, 0x19)] // AMD EPYC 9004 (Zen 4): base family 0xF + extended 0x0A
    [InlineData(0x00B00F21, 0x1A)] // AMD EPYC 9005 (Zen 5)
    [InlineData(0x00830F10, 0x17)] // AMD Zen 2
    [InlineData(0x000806F8, 0x06)] // Intel Sapphire Rapids: base family 6, extended bits ignored
    public void Family_is_the_base_plus_the_extended_family_where_the_base_is_F(int eax, int family) =>
        Assert.Equal(family, CpuModel.FamilyOf(eax));

    [Fact]
    public void Family_and_vendor_match_proc_cpuinfo()
    {
        if (!X86Base.IsSupported || !File.Exists("/proc/cpuinfo")) return;
        string[] lines = File.ReadAllLines("/proc/cpuinfo");
        string Field(string name) => lines.First(l => l.StartsWith(name + "\t", StringComparison.Ordinal) || l.StartsWith(name + " ", StringComparison.Ordinal))
            .Split(':', 2)[1].Trim();
        Assert.Equal(Field("vendor_id"), CpuModel.Vendor);
        Assert.Equal(int.Parse(Field("cpu family")), CpuModel.Family);
    }
}
