using System.Text.Json;

namespace DeepSeekSharp.Formats.SafeTensors;

/// <summary>The safetensors of a Hugging Face model folder: one <c>model.safetensors</c>, shards listed by
/// <c>model.safetensors.index.json</c>, or failing both every <c>*.safetensors</c> file in the folder.</summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    public const string IndexFileName = "model.safetensors.index.json";
    public const string SingleFileName = "model.safetensors";

    private readonly List<SafeTensorsFile> _files;
    private readonly Dictionary<string, SafeTensorsFile> _owner;

    private SafeTensorsCheckpoint(string directory, List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> owner)
    {
        Directory = directory;
        _files = files;
        _owner = owner;
    }

    public string Directory { get; }
    public IReadOnlyList<SafeTensorsFile> Files => _files;
    public IEnumerable<string> TensorNames => _owner.Keys;

    /// <summary>True when the folder holds any safetensors weights.</summary>
    public static bool Exists(string directory) =>
        File.Exists(System.IO.Path.Combine(directory, IndexFileName)) ||
        System.IO.Directory.EnumerateFiles(directory, "*.safetensors").Any();

    public static SafeTensorsCheckpoint Open(string directory)
    {
        string indexPath = System.IO.Path.Combine(directory, IndexFileName);
        var files = new List<SafeTensorsFile>();
        var owner = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            if (File.Exists(indexPath))
                OpenSharded(directory, indexPath, files, owner);
            else
            {
                string[] paths = System.IO.Directory.EnumerateFiles(directory, "*.safetensors").Order(StringComparer.Ordinal).ToArray();
                if (paths.Length == 0)
                    throw new FileNotFoundException($"{directory}: no {SingleFileName}, {IndexFileName} or other *.safetensors file");
                foreach (string p in paths)
                {
                    SafeTensorsFile f = SafeTensorsFile.Open(p);
                    files.Add(f);
                    foreach (string name in f.Tensors.Keys)
                        if (!owner.TryAdd(name, f))
                            throw new InvalidDataException($"tensor '{name}' appears in both {owner[name].FileName} and {f.FileName}");
                }
            }
        }
        catch
        {
            foreach (SafeTensorsFile f in files) f.Dispose();
            throw;
        }
        return new SafeTensorsCheckpoint(directory, files, owner);
    }

    private static void OpenSharded(string directory, string indexPath, List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> owner)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(indexPath)); }
        catch (JsonException e) { throw new InvalidDataException($"{IndexFileName}: not valid JSON: {e.Message}", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out JsonElement map) || map.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{IndexFileName}: no 'weight_map' object");
            var byFile = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
            foreach (JsonProperty p in map.EnumerateObject())
            {
                string shard = p.Value.GetString() ?? throw new InvalidDataException($"{IndexFileName}: weight_map entry '{p.Name}' is not a file name");
                if (shard.Contains('/') || shard.Contains('\\') || shard.Contains(".."))
                    throw new InvalidDataException($"{IndexFileName}: weight_map entry '{p.Name}' names '{shard}', which is not a file in the model folder");
                if (!byFile.TryGetValue(shard, out SafeTensorsFile? f))
                {
                    string path = System.IO.Path.Combine(directory, shard);
                    if (!File.Exists(path))
                        throw new FileNotFoundException($"{IndexFileName}: tensor '{p.Name}' is mapped to '{shard}', which does not exist", path);
                    f = SafeTensorsFile.Open(path);
                    byFile.Add(shard, f);
                    files.Add(f);
                }
                if (!f.Tensors.ContainsKey(p.Name))
                    throw new InvalidDataException($"{IndexFileName}: tensor '{p.Name}' is mapped to {shard}, but that file has no such tensor");
                owner[p.Name] = f;
            }
        }
    }

    public bool Contains(string name) => _owner.ContainsKey(name);

    /// <summary>Finds a tensor and the file that holds it; null when absent.</summary>
    public (SafeTensorsFile File, TensorInfo Info)? TryGet(string name) =>
        _owner.TryGetValue(name, out SafeTensorsFile? f) ? (f, f.Tensors[name]) : null;

    public string Describe() => File.Exists(System.IO.Path.Combine(Directory, IndexFileName))
        ? $"{Directory} ({IndexFileName}, {_files.Count} shards)"
        : $"{Directory} ({string.Join(", ", _files.Select(f => f.FileName))})";

    public void Dispose()
    {
        foreach (SafeTensorsFile f in _files) f.Dispose();
    }
}
