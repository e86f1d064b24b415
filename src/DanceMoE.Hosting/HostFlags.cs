
namespace DanceMoE.Hosting;

/// <summary>
/// A host's command line checked against the flags it knows before the configuration reads it: the configuration's
/// command-line provider takes any <c>--key value</c> (and <c>/key value</c>), so a mistyped flag (<c>--memroy-mb 512</c>)
/// would be dropped without a word and the host would run on the default.
/// </summary>
public static class HostFlags
{
    /// <summary>Each argument must be a known flag with its value (<c>--flag value</c> or <c>--flag=value</c>) or one of <paramref name="switches"/>, which take none.</summary>
    /// <exception cref="HostFlagException">An unknown flag, a stray argument or a flag without its value, in one line.</exception>
    public static void Check(IReadOnlyList<string> args, IReadOnlyDictionary<string, string> flags, params string[] switches)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(flags);
        for (var i = 0; i < args.Count; i++)
        {
            var argument = args[i];
            if (switches.Contains(argument, StringComparer.Ordinal))
            {
                continue;
            }

            var name = argument.Split('=', 2)[0];
            if (!flags.ContainsKey(name))
            {
                var known = string.Join(", ", flags.Keys.Union(switches, StringComparer.Ordinal).Order(StringComparer.Ordinal));
                throw new HostFlagException(name.StartsWith("--", StringComparison.Ordinal)
                    ? $"unknown flag '{Printable(name)}' (flags: {known})"
                    : $"unexpected argument '{Printable(argument)}': each setting is a flag and its value (flags: {known})");
            }

            if (name.Length == argument.Length && ++i == args.Count)
            {
                throw new HostFlagException($"flag '{name}' has no value");
            }
        }
    }

    /// <summary>At most 64 characters, control characters escaped, so that the error stays one readable line.</summary>
    private static string Printable(string text) => text.Length > 64 ? PrintableText.Of(text[..64]) + "..." : PrintableText.Of(text);
}

/// <summary>A host's command line names a flag it does not know, or leaves one without its value.</summary>
public sealed class HostFlagException(string message) : Exception(message);
