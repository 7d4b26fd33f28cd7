using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels;
using Xunit.Abstractions;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>The instruction-set switches .ci/run uses really switch the paths off (a switch the runtime no longer
/// knows — as DOTNET_EnableAVX512F became on .NET 10 — would leave a "narrower" run testing the widest paths again),
/// and the paths of this run are reported.</summary>
public class KernelPathTests(ITestOutputHelper output)
{
    [Fact]
    public void Instruction_set_switches_take_effect()
    {
        output.WriteLine(KernelPaths.Describe());
        if (Environment.GetEnvironmentVariable("DOTNET_EnableAVX512") == "0")
        {
            Assert.False(Avx512F.IsSupported, "DOTNET_EnableAVX512=0 but AVX-512F is still on");
            Assert.False(Avx512Vbmi.VL.IsSupported, "DOTNET_EnableAVX512=0 but AVX-512 VBMI is still on (Q5_0's shuffle path untested)");
            Assert.False(Vector512.IsHardwareAccelerated);
            if (Avx2.IsSupported)
            {
                Assert.Contains("Q2_K–Q6_K tiles on", KernelPaths.Describe()); // their 256-bit kernels are the ones tested
                Assert.Contains("FP8 runs (AVX2)", KernelPaths.Describe()); // and FP8's AVX2 layout is the one loaded
            }
        }
        if (Environment.GetEnvironmentVariable("DOTNET_EnableAVX2") == "0")
        {
            Assert.False(Avx2.IsSupported, "DOTNET_EnableAVX2=0 but AVX2 is still on");
            Assert.False(Vector256.IsHardwareAccelerated);
            Assert.Contains("Q2_K–Q6_K tiles off", KernelPaths.Describe()); // the GGUF layouts' kernels are the ones tested
            // The row dots take the 128-bit integer kernels (ARM64's, with SSE's multiply-add in place of sdot).
            Assert.Contains("128-bit quantised dots on", KernelPaths.Describe());
            Assert.Contains("FP8 file layout", KernelPaths.Describe());
        }
        if (Environment.GetEnvironmentVariable("DOTNET_EnableAVXVNNI") == "0")
        {
            Assert.False(AvxVnni.IsSupported, "DOTNET_EnableAVXVNNI=0 but AVX-VNNI is still on");
            Assert.Contains("AVX-VNNI off", KernelPaths.Describe());
            if (Avx2.IsSupported)
            {
                // The byte tiles' vpmaddubsw kernels (what a CPU without AVX-VNNI runs) are the ones tested.
                Assert.Contains("Q8_0 tiles on", KernelPaths.Describe());
                Assert.Contains("Q4_0/Q5_0 tiles on", KernelPaths.Describe());
            }
        }
        Assert.Contains(Vector512.IsHardwareAccelerated ? "vectors 512-bit" : Vector256.IsHardwareAccelerated ? "vectors 256-bit" : "vectors 128-bit", KernelPaths.Describe());
    }
}
