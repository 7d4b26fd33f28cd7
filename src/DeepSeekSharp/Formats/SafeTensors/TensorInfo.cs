using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Formats.SafeTensors;

/// <summary>One tensor entry of a safetensors header. <see cref="Begin"/>/<see cref="End"/> are byte offsets
/// relative to the start of the data section.</summary>
public sealed record TensorInfo(string Name, WeightFormat Format, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => checked(a * b));
    public long ByteLength => End - Begin;
    public static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";
    public override string ToString() => $"{Name} {Format.SafeTensorsName()} {FormatShape(Shape)}";
}
