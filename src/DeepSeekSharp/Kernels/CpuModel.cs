using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels;

/// <summary>The CPU's vendor and family from <c>cpuid</c>, for the few choices that depend on a microarchitecture
/// rather than on an instruction set (see <see cref="Quant.Q4KTiles.PrefetchesAhead"/>).</summary>
internal static class CpuModel
{
    /// <summary>"AuthenticAMD", "GenuineIntel", … or "" where there is no <c>cpuid</c>.</summary>
    public static string Vendor { get; } = ReadVendor();

    /// <summary>The family as AMD and Intel number it (base family, plus the extended family where the base is 0xF):
    /// 0x19 is AMD Zen 3 and Zen 4, 0x1A Zen 5; 0 where there is no <c>cpuid</c>.</summary>
    public static int Family { get; } = X86Base.IsSupported ? FamilyOf(X86Base.CpuId(1, 0).Eax) : 0;

    /// <summary>The family encoded in <c>cpuid</c> leaf 1's EAX.</summary>
    internal static int FamilyOf(int eax)
    {
        int family = (eax >> 8) & 0xF;
        return family == 0xF ? family + ((eax >> 20) & 0xFF) : family;
    }

    private static string ReadVendor()
    {
        if (!X86Base.IsSupported) return "";
        (_, int ebx, int ecx, int edx) = X86Base.CpuId(0, 0);
        Span<byte> name = stackalloc byte[12];
        BitConverter.TryWriteBytes(name, ebx);
        BitConverter.TryWriteBytes(name[4..], edx);
        BitConverter.TryWriteBytes(name[8..], ecx);
        return System.Text.Encoding.ASCII.GetString(name);
    }
}
