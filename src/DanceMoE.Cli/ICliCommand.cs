namespace DanceMoE.Cli;

/// <summary>
/// A verb whose body still reads <see cref="Arguments"/>, run through <see cref="Verbs.LegacyBridge"/> (transitional).
/// New verbs declare a System.CommandLine <c>Command</c> and read its parse result instead.
/// </summary>
public interface ICliCommand
{
    string Verb { get; }

    /// <summary>One usage line, starting with the verb (the help comes from the verb's System.CommandLine grammar).</summary>
    string Usage { get; }

    Task<int> RunAsync(Arguments args, CancellationToken cancellationToken);
}
