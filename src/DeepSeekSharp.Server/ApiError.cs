namespace DeepSeekSharp.Server;

/// <summary>A request the server refuses, with the OpenAI error body fields.</summary>
public sealed class ApiError(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error")
    : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type;

    public static ApiError BadRequest(string message, string? param = null, string? code = null) => new(400, message, param, code);

    /// <summary>503 <c>server_shutting_down</c>: refused or cut off because the server is draining.</summary>
    public static ApiError ShuttingDown(string message) => new(503, message, code: "server_shutting_down", type: "server_error");
}
