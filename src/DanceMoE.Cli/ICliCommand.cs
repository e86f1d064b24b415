namespace DanceMoE.Cli;

/// <summary>One verb of the CLI. Register new commands in <see cref="CommandLine"/>.</summary>
public interface ICliCommand
{
    string Verb { get; }

    /// <summary>One usage line, starting with the verb.</summary>
    string Usage { get; }

    Task<int> RunAsync(Arguments args, CancellationToken cancellationToken);
}
