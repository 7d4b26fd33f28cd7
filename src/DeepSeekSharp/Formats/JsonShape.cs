namespace DeepSeekSharp.Formats;

/// <summary>Reading a JSON file whose content may not have the expected shape. System.Text.Json and the collections
/// report a missing member, a value of the wrong type, invalid text or an out-of-range id with general exception
/// types; <see cref="Read"/> turns those into one <see cref="InvalidDataException"/> naming the file.</summary>
internal static class JsonShape
{
    public static T Read<T>(string fileName, Func<T> parse)
    {
        try { return parse(); }
        catch (Exception e) when (e is InvalidOperationException or FormatException or KeyNotFoundException
                                      or ArgumentException or IndexOutOfRangeException or OverflowException)
        {
            throw new InvalidDataException($"{fileName} is malformed: {e.Message}", e);
        }
    }
}
