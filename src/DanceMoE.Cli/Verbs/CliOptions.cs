using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;
using DanceMoE.Hosting;
using DanceMoE.Placement;

namespace DanceMoE.Cli.Verbs;

/// <summary>
/// Options as every verb declares them: <c>--name</c>, a default shown in the help, numbers read with the invariant
/// culture and checked against their range, each mistake reported as one line naming the option.
/// </summary>
public static class CliOptions
{
    /// <summary>A whole number with a default, from <paramref name="min"/> to <paramref name="max"/>.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1720", Justification = "Reads as the option's type at call sites: CliOptions.Int(\"seed\", 0, ...).")]
    public static Option<int> Int(string name, int fallback, string description, int min = int.MinValue, int max = int.MaxValue) => new("--" + name)
    {
        Description = description + RangeText(min, max, int.MinValue, int.MaxValue),
        HelpName = "N",
        DefaultValueFactory = _ => fallback,
        CustomParser = result => (int)Parse(result, name, fallback, min, max, true),
    };

    /// <summary>A whole number without a default: null when not given.</summary>
    public static Option<int?> OptionalInt(string name, string description, int min = int.MinValue, int max = int.MaxValue) => new("--" + name)
    {
        Description = description + RangeText(min, max, int.MinValue, int.MaxValue),
        HelpName = "N",
        CustomParser = result => (int)Parse(result, name, 0, min, max, true),
    };

    /// <summary>A whole number that may exceed <see cref="int"/>, without a default.</summary>
    public static Option<long?> OptionalLong(string name, string description, long min = long.MinValue) => new("--" + name)
    {
        Description = description + RangeText(min, long.MaxValue, long.MinValue, long.MaxValue),
        HelpName = "N",
        CustomParser = result => (long)Parse(result, name, 0, min, long.MaxValue, true),
    };

    /// <summary>A number with a default, from <paramref name="min"/> to <paramref name="max"/>.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1720", Justification = "Reads as the option's type at call sites.")]
    public static Option<double> Double(string name, double fallback, string description, double min = double.MinValue, double max = double.MaxValue) => new("--" + name)
    {
        Description = description + RangeText(min, max, double.MinValue, double.MaxValue),
        HelpName = "X",
        DefaultValueFactory = _ => fallback,
        CustomParser = result => Parse(result, name, fallback, min, max, false),
    };

    /// <summary>A number without a default: null when not given.</summary>
    public static Option<double?> OptionalDouble(string name, string description, double min = double.MinValue, double max = double.MaxValue) => new("--" + name)
    {
        Description = description + RangeText(min, max, double.MinValue, double.MaxValue),
        HelpName = "X",
        CustomParser = result => Parse(result, name, 0, min, max, false),
    };

    /// <summary>The model a command runs: an exported model or a checkpoint, resolved by <c>ModelCatalog.ResolveExported</c>; null when not given.</summary>
    public static Option<string> Model() =>
        Text("model", "exported model or checkpoint (default: onnx/default, else a tiny seeded one)", valueName: "DIR");

    /// <summary>A text value, never empty (a path, a list, a prompt); null when not given and there is no <paramref name="fallback"/>.</summary>
    public static Option<string> Text(string name, string description, string? fallback = null, bool required = false, string? valueName = null)
    {
        var option = new Option<string>("--" + name) { Description = description, Required = required, HelpName = valueName };
        if (fallback is not null)
        {
            option.DefaultValueFactory = _ => fallback;
        }

        option.Validators.Add(result => RefuseEmpty(result, "--" + name));
        return option;
    }

    /// <summary>A positional text value (a path), never empty.</summary>
    public static Argument<string> Positional(string name, string description) =>
        new(name) { Description = description, Validators = { result => RefuseEmpty(result, name) } };

    /// <summary>The prompt of a generation.</summary>
    public static Option<string> Prompt() => Text("prompt", "the prompt", required: true, valueName: "TEXT");

    /// <summary>An edge id, checked by <see cref="EdgeQueues.Problem"/>; with <paramref name="list"/>, ids separated by commas.</summary>
    public static Option<string> EdgeId(string name, string description, bool required = false, bool list = false)
    {
        var option = Text(name, description, required: required, valueName: list ? "ID,ID,..." : "ID");
        option.Validators.Add(result =>
        {
            foreach (var id in result.Tokens.SelectMany(t => list ? t.Value.Split(',', StringSplitOptions.TrimEntries) : [t.Value]))
            {
                if (EdgeQueues.Problem(id) is { } problem)
                {
                    result.AddError($"--{name}: {problem}");
                    return;
                }
            }
        });
        return option;
    }

    /// <summary>One of <paramref name="choices"/>, the first being the default.</summary>
    public static Option<string> Choice(string name, string description, params string[] choices)
    {
        var option = Text(name, description, choices[0], valueName: string.Join('|', choices));
        option.Validators.Add(result =>
        {
            if (result.Tokens.Count > 0 && !choices.Contains(result.Tokens[0].Value, StringComparer.Ordinal))
            {
                result.AddError($"--{name} must be {string.Join(", ", choices[..^1])} or {choices[^1]} (got '{result.Tokens[0].Value}')");
            }
        });
        return option;
    }

    /// <summary>The coordinator placement job's algorithm: one of <see cref="PlacementAlgorithms.Names"/>, <c>dancemoe</c> by default.</summary>
    public static Option<string> Algorithm() => Choice(
        "algorithm",
        "the placement job's algorithm",
        [PlacementAlgorithms.DanceMoe, .. PlacementAlgorithms.Names.Where(name => name != PlacementAlgorithms.DanceMoe)]);

    /// <summary>The execution provider of ONNX Runtime: <c>auto</c> (the default), <c>cuda</c> or <c>cpu</c>.</summary>
    public static Option<string> Provider() => Choice("provider", "execution provider: auto, cuda or cpu", "auto", "cuda", "cpu");

    /// <summary>A switch that takes no value.</summary>
    public static Option<bool> Flag(string name, string description) => new("--" + name)
    {
        Description = description,
        Arity = ArgumentArity.Zero,
    };

    /// <summary>
    /// The <paramref name="options"/> given on the command line, as <c>--name=value</c> (a value may start with dashes)
    /// or <c>--flag</c>: the command line of a host process, which maps each flag onto its configuration key.
    /// </summary>
    public static List<string> Given(ParseResult result, IEnumerable<Option> options)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(options);
        var given = new List<string>();
        foreach (var option in options)
        {
            if (result.GetResult(option) is not { Implicit: false } optionResult)
            {
                continue;
            }

            if (option.Arity.MaximumNumberOfValues == 0)
            {
                given.Add(option.Name);
            }
            else
            {
                given.AddRange(optionResult.Tokens.Select(token => $"{option.Name}={token.Value}"));
            }
        }

        return given;
    }

    private static void RefuseEmpty(SymbolResult result, string name)
    {
        if (result.Tokens.Any(t => t.Value.Length == 0))
        {
            result.AddError($"{name} is empty");
        }
    }

    private static string RangeText<T>(T min, T max, T noMin, T noMax)
        where T : IEquatable<T>, IFormattable
    {
        var low = min.Equals(noMin) ? null : min.ToString(null, CultureInfo.InvariantCulture);
        var high = max.Equals(noMax) ? null : max.ToString(null, CultureInfo.InvariantCulture);
        return (low, high) switch
        {
            (null, null) => "",
            (_, null) => $" (>= {low})",
            (null, _) => $" (<= {high})",
            _ => $" ({low} to {high})",
        };
    }

    private static double Parse(ArgumentResult result, string name, double fallback, double min, double max, bool whole)
    {
        if (result.Tokens.Count == 0)
        {
            return fallback;
        }

        var text = result.Tokens[0].Value;
        var parsed = whole
            ? long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var integer) ? integer : (double?)null
            : double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var real) ? real : null;
        if (parsed is null && !(whole && BigInteger.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out _)))
        {
            result.AddError($"--{name} must be {(whole ? "a whole number" : "a number")} (got '{text}')");
            return fallback;
        }

        // A whole number too large for a long is out of range, not something else.
        if (parsed is not { } value || double.IsNaN(value) || value < min || value > max)
        {
            result.AddError($"--{name} must be between {min.ToString(CultureInfo.InvariantCulture)} and {max.ToString(CultureInfo.InvariantCulture)} (got '{text}')");
            return fallback;
        }

        return value;
    }
}
