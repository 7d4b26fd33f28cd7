using System.Diagnostics;
using System.Text.RegularExpressions;

namespace DeepSeekSharp.Tests.Cli;

/// <summary>A process killed by a signal in the middle of writing a prefix-cache block to <c>--cache-dir</c> (no
/// handler, no finally, no flush) leaves nothing a later run would trust: the next run deletes the cut-short write,
/// restores nothing from it, and answers exactly as a run without the cache.</summary>
public class CacheDirKillTests
{
    [Fact]
    public void AGenerateKilledWhileWritingABlock_LeavesNothingALaterRunTrusts()
    {
        string dss = Path.Combine(AppContext.BaseDirectory, "dss.dll");
        using var dir = new TempDir();
        string prompt = string.Join(" ", Enumerable.Range(0, 300).Select(i => $"item{i}"));
        string[] args = ["generate", "--model", RandomModel.V3Tiny, "--prompt", prompt, "--raw", "--max-tokens", "4", "--temperature", "0", "--context", "1024"];
        var cold = CliRunner.Run(args);
        Assert.True(cold.Code == 0, cold.Stderr);
        string cache = dir.File("cache");

        // The kernel kills the process (SIGXFSZ, exit 128 + 25) the moment a file it writes passes 16 KiB: inside its
        // first block, which is larger. (W^X off: the runtime's double-mapped code heap is a file that would pass the
        // limit at start.)
        var start = new ProcessStartInfo("bash", ["-c", "ulimit -f 16; exec dotnet \"$@\"", "bash", dss, .. args, "--cache-dir", cache])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, Environment = { ["DOTNET_EnableWriteXorExecute"] = "0" },
        };
        using (Process p = Process.Start(start)!)
        {
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 153, $"exit {p.ExitCode}: {err}");
        }
        string[] left = Directory.GetFiles(cache, "*", SearchOption.AllDirectories);
        Assert.Single(left);
        Assert.EndsWith(".tmp", left[0]); // the block it was writing, cut short; no block file
        Assert.Equal(16384, new FileInfo(left[0]).Length);

        var next = CliRunner.Run([.. args, "--cache-dir", cache]);
        Assert.True(next.Code == 0, next.Stderr);
        Assert.Equal(cold.Stdout, next.Stdout);
        Assert.DoesNotContain("cached)", next.Stderr);
        Assert.DoesNotContain("ignored", next.Stderr);
        Assert.Empty(Directory.GetFiles(cache, "*.tmp", SearchOption.AllDirectories));

        var warm = CliRunner.Run([.. args, "--cache-dir", cache]); // the blocks the second run wrote whole
        Assert.Equal(cold.Stdout, warm.Stdout);
        Assert.Matches(@"prompt \d+ tokens \(\d+ cached\)", warm.Stderr);
    }
}
