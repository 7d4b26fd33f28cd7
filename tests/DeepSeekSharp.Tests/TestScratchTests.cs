namespace DeepSeekSharp.Tests;

public class TestScratchTests
{
    /// <summary>A run's scratch folder is named for its process; sweeping deletes the folders of processes that are not
    /// running (a run killed mid-way) and keeps those of live ones and this one's, and anything not named for a process.</summary>
    [Fact]
    public void Sweep_DeletesOnlyTheFoldersOfRunsNoLongerAlive()
    {
        using var parent = new TempDir();
        string dead = Directory.CreateDirectory(parent.File(int.MaxValue.ToString())).FullName; // no such process
        File.WriteAllText(Path.Combine(dead, "left-behind.gguf"), "x");
        string self = Directory.CreateDirectory(parent.File(Environment.ProcessId.ToString())).FullName;
        string other = Directory.CreateDirectory(parent.File("not-a-run")).FullName;
        TestScratch.Sweep(parent.Path);
        Assert.False(Directory.Exists(dead));
        Assert.True(Directory.Exists(self));
        Assert.True(Directory.Exists(other));
        Assert.StartsWith(Path.Combine(Path.GetTempPath(), "dss-tests"), TestScratch.Root);
        Assert.Equal(Environment.ProcessId.ToString(), Path.GetFileName(TestScratch.Root));
    }
}
