using DeepSeekSharp.Linear;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Formats.SafeTensors;

namespace DeepSeekSharp.Tests;

/// <summary>The folder a test run keeps its scratch files in: dss-tests/PID under the system's temporary folder,
/// deleted when the run exits. A run killed before it could delete its folder leaves it behind; the next run deletes
/// the folders of runs no longer alive as it starts, so interrupted runs do not pile up files (GGUF conversions of
/// hundreds of megabytes among them).</summary>
public static class TestScratch
{
    public static string Root { get; } = Create();

    private static string Create()
    {
        string parent = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "dss-tests");
        Directory.CreateDirectory(parent);
        Sweep(parent);
        string root = System.IO.Path.Combine(parent, Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Directory.CreateDirectory(root);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Delete(root);
        return root;
    }

    /// <summary>Deletes the folders in <paramref name="parent"/> named for processes that are no longer running.</summary>
    internal static void Sweep(string parent)
    {
        foreach (string dir in Directory.GetDirectories(parent))
            if (int.TryParse(System.IO.Path.GetFileName(dir), out int pid) && pid != Environment.ProcessId && !Alive(pid))
                Delete(dir);
    }

    private static bool Alive(int pid)
    {
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; } // no such process
        catch (InvalidOperationException) { return false; }
    }

    private static void Delete(string dir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

/// <summary>A temporary folder deleted when disposed.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir() => System.IO.Directory.CreateDirectory(Path);
    public string Path { get; } = System.IO.Path.Combine(TestScratch.Root, "dss-test-" + Guid.NewGuid().ToString("N"));
    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>A copy of a golden case's folder to mutate.</summary>
    public static TempDir CopyOf(string golden)
    {
        var t = new TempDir();
        foreach (string f in System.IO.Directory.GetFiles(GoldenCase.DataPath(golden)))
            System.IO.File.Copy(f, t.File(System.IO.Path.GetFileName(f)));
        return t;
    }

    public void Dispose()
    {
        try { System.IO.Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>Writes safetensors files from raw entries, so tests can make well-formed and malformed files.</summary>
public static class SafeTensorsWriter
{
    public sealed record Entry(string Name, string DType, long[] Shape, byte[] Data, long[]? Offsets = null);

    /// <summary>Writes entries back to back; <see cref="Entry.Offsets"/> overrides the offsets written in the header.</summary>
    public static void Write(string path, IEnumerable<Entry> entries, int truncateDataBy = 0)
    {
        var header = new Dictionary<string, object> { ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" } };
        var data = new MemoryStream();
        foreach (Entry e in entries)
        {
            long begin = data.Length;
            data.Write(e.Data);
            header[e.Name] = new Dictionary<string, object> { ["dtype"] = e.DType, ["shape"] = e.Shape, ["data_offsets"] = e.Offsets ?? [begin, data.Length] };
        }
        byte[] json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int pad = (8 - json.Length % 8) % 8;
        json = [.. json, .. Enumerable.Repeat((byte)' ', pad)];
        using var f = System.IO.File.Create(path);
        f.Write(BitConverter.GetBytes((long)json.Length));
        f.Write(json);
        byte[] raw = data.ToArray();
        f.Write(raw, 0, raw.Length - truncateDataBy);
    }

    /// <summary>Every tensor of an existing file as entries (raw bytes copied).</summary>
    public static List<Entry> ReadAll(string path)
    {
        using SafeTensorsFile f = SafeTensorsFile.Open(path);
        return f.Tensors.Values.OrderBy(t => t.Begin)
            .Select(t => new Entry(t.Name, t.Format.SafeTensorsName(), t.Shape, f.GetBytes(t).ToArray())).ToList();
    }

    public static byte[] F32(params float[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();
}

/// <summary>Reads the float64 tensors of a safetensors file (the training golden data), as float32.</summary>
internal static class F64SafeTensors
{
    public static Dictionary<string, (float[] Values, long[] Shape)> Read(string path)
    {
        byte[] b = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(b, 0);
        using JsonDocument header = JsonDocument.Parse(b.AsMemory(8, (int)n));
        var result = new Dictionary<string, (float[], long[])>();
        foreach (JsonProperty p in header.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") continue;
            Assert.Equal("F64", p.Value.GetProperty("dtype").GetString());
            long[] shape = [.. p.Value.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64())];
            long start = p.Value.GetProperty("data_offsets")[0].GetInt64(), end = p.Value.GetProperty("data_offsets")[1].GetInt64();
            var values = new float[(end - start) / 8];
            for (int i = 0; i < values.Length; i++) values[i] = (float)BitConverter.ToDouble(b, (int)(8 + n + start + i * 8));
            result[p.Name] = (values, shape);
        }
        return result;
    }
}
