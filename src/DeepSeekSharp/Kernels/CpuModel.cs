using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels;

/// <summary>The CPU's vendor and family from <c>cpuid</c>, for the few choices that depend on a microarchitecture
/// rather than on an instruction set (see <see cref="Quant.Q4KTiles.PrefetchesAhead"/> and
/// <see cref="Quant.ByteTiles.OnePrefetches"/>).</summary>
internal static class CpuModel
{
    /// <summary>"AuthenticAMD", "GenuineIntel", … or "" where there is no <c>cpuid</c>.</summary>
    public static string Vendor { get; } = ReadVendor();

    /// <summary>The family as AMD and Intel number it (base family, plus the extended family where the base is 0xF):
    /// 0x19 is AMD Zen 3 and Zen 4 (<see cref="IsZen4"/> tells them apart), 0x1A Zen 5; 0 where there is no <c>cpuid</c>.</summary>
    public static int Family { get; } = X86Base.IsSupported ? FamilyOf(X86Base.CpuId(1, 0).Eax) : 0;

    /// <summary>Whether <c>cpuid</c> (leaf 7, EBX bit 16) lists AVX-512F: the hardware's answer, whatever
    /// <c>DOTNET_EnableAVX512</c> tells the runtime.</summary>
    public static bool ListsAvx512F { get; } = X86Base.IsSupported && X86Base.CpuId(0, 0).Eax >= 7 && (X86Base.CpuId(7, 0).Ebx & (1 << 16)) != 0;

    /// <summary>AMD Zen 4: family 19h with AVX-512 (Zen 3, the same family, has none).</summary>
    public static bool IsZen4 => Vendor == "AuthenticAMD" && Family == 0x19 && ListsAvx512F;

    /// <summary>AMD Zen 3: family 19h without AVX-512.</summary>
    public static bool IsZen3 => Vendor == "AuthenticAMD" && Family == 0x19 && !ListsAvx512F;

    /// <summary>An Intel CPU (any family).</summary>
    public static bool IsIntel => Vendor == "GenuineIntel";

    /// <summary>Whether the one-token tile kernels prefetch ahead: <paramref name="measured"/>, the choice measured for
    /// this CPU, unless <c>DSS_PREFETCH</c> is 0 or 1 (to measure the difference on a CPU not yet measured).</summary>
    internal static bool Prefetch(bool measured) => Prefetch(measured, Environment.GetEnvironmentVariable("DSS_PREFETCH"));

    /// <summary><see cref="Prefetch(bool)"/> with the variable's value given.</summary>
    internal static bool Prefetch(bool measured, string? setting) => setting switch { "0" => false, "1" => true, _ => measured };

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
