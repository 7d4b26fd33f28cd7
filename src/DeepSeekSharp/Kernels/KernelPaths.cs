using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels;

/// <summary>Which vector paths the kernels take on this CPU and runtime, as the runtime reports them (the
/// <c>DOTNET_EnableAVX512</c>, <c>DOTNET_EnableAVX2</c> and <c>DOTNET_EnableAVXVNNI</c> switches turn them off).</summary>
public static class KernelPaths
{
    /// <summary>One line, e.g. "vectors 512-bit; AVX-512F on, AVX-512BW on, AVX2 on, FMA on, AVX-VNNI off, AVX-512 VBMI on
    /// (Q5_0 fifth bits); 32-weight block panels int16 (AVX-512); Q2_K–Q6_K tiles on (one-token prefetch on); Q8_0 tiles on (one-token prefetch off); Q4_0/Q5_0 tiles on; FP8 quads (AVX-512)".</summary>
    public static string Describe()
    {
        string width = Vector512.IsHardwareAccelerated ? "512-bit" : Vector256.IsHardwareAccelerated ? "256-bit" : Vector128.IsHardwareAccelerated ? "128-bit" : "scalar";
        static string On(bool b) => b ? "on" : "off";
        // Where there is no AVX2 (ARM64, or x86 with it switched off) the quantised dots and, with a hardware
        // fused multiply-add, the float kernels take 128-bit vectors.
        string narrow = Avx2.IsSupported ? "" : $"; 128-bit quantised dots {On(Quant.IntDots128.IsSupported)}, 128-bit float kernels {On(Simd128.IsFast)}";
        if (AdvSimd.IsSupported) return $"vectors {width}; AdvSimd on, ARM dot product (sdot) {On(Dp.IsSupported)}" + narrow;
        return $"vectors {width}; AVX-512F {On(Avx512F.IsSupported)}, AVX-512BW {On(Avx512BW.IsSupported)}, AVX2 {On(Avx2.IsSupported)}, " +
               $"FMA {On(Fma.IsSupported)}, AVX-VNNI {On(AvxVnni.IsSupported)}, AVX-512 VBMI {On(Avx512Vbmi.VL.IsSupported)} (Q5_0 fifth bits); " +
               "32-weight block panels " +
               (AvxVnni.IsSupported ? "bytes (AVX-VNNI)" : Avx512BW.IsSupported ? "int16 (AVX-512)" : "off") +
               $"; Q2_K–Q6_K tiles {On(Quant.Q4KTiles.IsSupported && Quant.Q5KTiles.IsSupported && Quant.Q6KTiles.IsSupported && Quant.LowBitKTiles.IsSupported)} (one-token prefetch {On(Quant.Q4KTiles.PrefetchesAhead)}); Q8_0 tiles {On(Quant.Q8Tiles.IsSupported)} (one-token prefetch {On(Quant.ByteTiles.OnePrefetches)}); Q4_0/Q5_0 tiles {On(Quant.Q4Tiles.IsSupported && Quant.Q5Tiles.IsSupported)}; FP8 " +
               (Quant.WidenedDot<Quant.Fp8Codes>.FourAtOnce ? "quads (AVX-512)" : Quant.Fp8Runs.IsSupported ? "runs (AVX2)" : "file layout") + narrow;
    }
}
