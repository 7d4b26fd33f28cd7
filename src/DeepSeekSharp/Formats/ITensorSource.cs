using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Formats;

/// <summary>Named tensors of a checkpoint, addressed by their Hugging Face names whatever the file format: what
/// <see cref="Model.WeightLoader"/> reads. Implemented for safetensors folders and for GGUF files.</summary>
public interface ITensorSource
{
    bool Contains(string name);

    /// <summary>The in-memory format a tensor has as stored (F32 for formats computed as float32).</summary>
    WeightFormat StoredFormat(string name);

    /// <summary>Reads a [rows, cols] weight into a matrix of <paramref name="format"/>; with <paramref name="inPlace"/>,
    /// a tensor already stored in that format may be used from the mapped file directly.</summary>
    /// <param name="why">where the expected shape comes from, for error messages</param>
    Matrix ReadMatrix(string name, int rows, int cols, string why, WeightFormat format, bool inPlace);

    float[] ReadVector(string name, int length, string why);

    /// <summary>Storage types of the tensors read so far, with counts.</summary>
    IReadOnlyDictionary<string, int> DTypesRead { get; }
}
