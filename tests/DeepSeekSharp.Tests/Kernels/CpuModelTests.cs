using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>The CPU family and AVX-512 bit the tile kernels' prefetch choices rest on are decoded as AMD and Intel define
/// them, and agree with what the operating system reports.</summary>
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
        bool avx512 = Field("flags").Split(' ').Contains("avx512f");
        Assert.Equal(avx512, CpuModel.ListsAvx512F);
        bool amd19 = Field("vendor_id") == "AuthenticAMD" && Field("cpu family") == "25";
        Assert.Equal(amd19 && avx512, CpuModel.IsZen4);
        Assert.Equal(amd19 && !avx512, CpuModel.IsZen3);
        Assert.Equal(Field("vendor_id") == "GenuineIntel", CpuModel.IsIntel);
    }

    [Theory]
    [InlineData(true, null, true)]
    [InlineData(false, null, false)]
    [InlineData(true, "0", false)]
    [InlineData(false, "1", true)]
    [InlineData(false, "yes", false)] // anything else leaves the measured choice
    public void DSS_PREFETCH_overrides_the_measured_choice_only_with_0_or_1(bool measured, string? setting, bool expected) =>
        Assert.Equal(expected, CpuModel.Prefetch(measured, setting));
}
