using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Formats;

/// <summary>Files written whole or not at all: the content goes to <c>PATH.tmp</c>, is flushed to disk, and the
/// temporary file is renamed over <c>PATH</c>; if writing fails, the temporary file is removed and <c>PATH</c> is as
/// it was. (Large tensor files stream through <see cref="SafeTensors.SafeTensorsWriter"/> and
/// <see cref="Gguf.GgufWriter"/>, which commit the same way.)</summary>
public static class AtomicFile
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static void Write(string path, Action<Stream> write)
    {
        string temp = path + ".tmp";
        try
        {
            using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(f);
                f.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    public static void WriteText(string path, string text) => Write(path, s => s.Write(new UTF8Encoding(false).GetBytes(text)));

    /// <summary>Indented JSON.</summary>
    public static void WriteJson(string path, object value) => WriteText(path, JsonSerializer.Serialize(value, Indented));
}
