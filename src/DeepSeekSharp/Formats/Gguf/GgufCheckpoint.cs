using System.Text.RegularExpressions;

namespace DeepSeekSharp.Formats.Gguf;

/// <summary>A GGUF model in one file or split into several as llama.cpp's gguf-split writes them
/// (<c>NAME-00001-of-00003.gguf</c> …, <c>split.no</c> / <c>split.count</c> / <c>split.tensors.count</c> keys;
/// the metadata lives in the first). Open the first file; the others are found next to it.</summary>
public sealed partial class GgufCheckpoint : IDisposable
{
    public const string SplitNo = "split.no", SplitCount = "split.count", SplitTensors = "split.tensors.count";

    private readonly Dictionary<string, (GgufFile File, GgufTensorInfo Info)> _tensors;

    private GgufCheckpoint(List<GgufFile> files, Dictionary<string, (GgufFile, GgufTensorInfo)> tensors)
    {
        Files = files;
        _tensors = tensors;
        Tensors = tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Item2, StringComparer.Ordinal);
    }

    /// <summary>The file holding the metadata (the first of a split).</summary>
    public GgufFile Main => Files[0];
    public IReadOnlyList<GgufFile> Files { get; }
    /// <summary>Every tensor of every file.</summary>
    public IReadOnlyDictionary<string, GgufTensorInfo> Tensors { get; }

    /// <summary>The file a tensor's data is in.</summary>
    public GgufFile FileOf(GgufTensorInfo t) => _tensors[t.Name].File;

    [GeneratedRegex(@"^(?<prefix>.*)-(?<no>\d{5})-of-(?<count>\d{5})\.gguf$", RegexOptions.IgnoreCase)]
    private static partial Regex SplitName();

    public static GgufCheckpoint Open(string path)
    {
        var files = new List<GgufFile> { GgufFile.Open(path) };
        try
        {
            GgufFile main = files[0];
            long count = main.Integer(SplitCount) ?? 1;
            long no = main.Integer(SplitNo) ?? 0;
            if (no != 0)
                throw new InvalidDataException($"{main.FileName}: this is part {no + 1} of a split GGUF; open the first part (…-00001-of-{count:D5}.gguf)");
            if (count > 1)
            {
                Match m = SplitName().Match(path);
                if (!m.Success)
                    throw new InvalidDataException($"{main.FileName}: split.count is {count}, but the name does not follow NAME-00001-of-{count:D5}.gguf, so the other parts cannot be found");
                for (int i = 1; i < count; i++)
                {
                    string part = $"{m.Groups["prefix"].Value}-{i + 1:D5}-of-{count:D5}.gguf";
                    if (!File.Exists(part)) throw new FileNotFoundException($"{main.FileName}: part {i + 1} of {count}, '{Path.GetFileName(part)}', is missing", part);
                    GgufFile f = GgufFile.Open(part);
                    files.Add(f);
                    if (f.Integer(SplitNo) != i)
                        throw new InvalidDataException($"{f.FileName}: split.no is {f.Integer(SplitNo)?.ToString() ?? "missing"}; expected {i}");
                }
            }
            var tensors = new Dictionary<string, (GgufFile, GgufTensorInfo)>(StringComparer.Ordinal);
            foreach (GgufFile f in files)
                foreach (GgufTensorInfo t in f.TensorList)
                    if (!tensors.TryAdd(t.Name, (f, t)))
                        throw new InvalidDataException($"{f.FileName}: tensor '{t.Name}' is also in {tensors[t.Name].Item1.FileName}");
            if (main.Integer(SplitTensors) is { } total && total != tensors.Count)
                throw new InvalidDataException($"{main.FileName}: split.tensors.count says {total} tensors; the {files.Count} parts hold {tensors.Count}");
            return new GgufCheckpoint(files, tensors);
        }
        catch
        {
            foreach (GgufFile f in files) f.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        foreach (GgufFile f in Files) f.Dispose();
    }
}
