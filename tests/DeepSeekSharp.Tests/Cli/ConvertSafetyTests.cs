using System.Diagnostics;
using System.Security.Cryptography;

namespace DeepSeekSharp.Tests.Cli;

/// <summary><c>dss convert</c> never destroys its input and never leaves a half-written OUT.tmp behind.</summary>
public class ConvertSafetyTests
{
    private static string CopyOfTinyModel(TempDir dir)
    {
        string copy = dir.File("model");
        Directory.CreateDirectory(copy);
        foreach (string f in Directory.GetFiles(RandomModel.V3Tiny)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        return copy;
    }

    private static string Hash(string dir) => string.Join(",", Directory.GetFiles(dir).Order(StringComparer.Ordinal)
        .Select(f => Path.GetFileName(f) + ":" + Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))));

    [Theory]
    [InlineData("model-00001-of-00001.safetensors")]
    [InlineData("config.json")]
    [InlineData("")]
    public void AnOutputThatIsOneOfTheInputsFiles_IsRefused_AndTheInputIsUntouched(string name)
    {
        using var dir = new TempDir();
        string model = CopyOfTinyModel(dir);
        string before = Hash(model);
        string target = name.Length == 0 ? model : Path.Combine(model, name);
        Assert.True(name.Length == 0 || File.Exists(target), $"the test model has no {name}");
        var (code, _, err) = CliRunner.Run("convert", "--model", model, "--out", target, "--type", "q8_0");
        Assert.Equal(1, code);
        Assert.Contains(name.Length == 0 ? "model folder itself" : "destroy the input", err);
        Assert.Equal(before, Hash(model));
    }

    [Fact]
    public void ANewGgufInsideTheModelFolder_IsFine()
    {
        using var dir = new TempDir();
        string model = CopyOfTinyModel(dir);
        var (code, _, err) = CliRunner.Run("convert", "--model", model, "--out", Path.Combine(model, "model-q8_0.gguf"), "--type", "q8_0");
        Assert.True(code == 0, err);
    }

    [Fact]
    public void AConvertStoppedBySigint_RemovesItsTempFile_AndWritesNothing()
    {
        string dss = Path.Combine(AppContext.BaseDirectory, "dss.dll");
        using var dir = new TempDir();
        // The conversion takes about a second; the signal goes as soon as OUT.tmp appears. Should a run finish
        // first on a fast machine, it is tried again.
        for (int attempt = 0; attempt < 4; attempt++)
        {
            string output = dir.File($"out{attempt}.gguf"), temp = output + ".tmp";
            using Process p = Process.Start(new ProcessStartInfo("bash", ["-c", $"dotnet '{dss}' convert --model '{RandomModel.V3Tiny}' --out '{output}' --type q4_k & " +
                "pid=$!; echo $pid; wait $pid; echo \"exit $?\""]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            int pid = int.Parse(p.StandardOutput.ReadLine()!);
            var clock = Stopwatch.StartNew();
            while (!File.Exists(temp) && !File.Exists(output) && clock.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(1);
            Process.Start("kill", ["-INT", pid.ToString()])!.WaitForExit();
            string rest = p.StandardOutput.ReadToEnd(), err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.False(File.Exists(temp), $"{temp} was left behind: {err}");
            if (rest.Contains("exit 0")) { Assert.True(File.Exists(output)); continue; } // finished before the signal
            Assert.Contains("exit 130", rest);
            Assert.Contains("interrupted by SIGINT", err);
            Assert.False(File.Exists(output));
            return;
        }
        Assert.Fail("every conversion finished before SIGINT arrived");
    }
}
