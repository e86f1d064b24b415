namespace DanceMoE.Model;

/// <summary>A checkpoint, manifest or model file that cannot be used; the message names the file and tensor.</summary>
public sealed class ModelFormatException(string message, Exception? inner = null) : Exception(message, inner);
