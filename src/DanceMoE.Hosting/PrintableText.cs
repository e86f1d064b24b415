using System.Globalization;
using System.Text;

namespace DanceMoE.Hosting;

/// <summary>
/// Text from outside (a flag, a model's answer from an edge) made safe to print on a terminal: a control character is
/// shown as \uXXXX, since ESC and its sequences would be run by the terminal (move the cursor, rewrite the title).
/// </summary>
public static class PrintableText
{
    /// <summary><paramref name="text"/> with every control character escaped; line feeds and tabs kept when <paramref name="keepLines"/>.</summary>
    public static string Of(string text, bool keepLines = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!text.Any(c => IsEscaped(c, keepLines)))
        {
            return text;
        }

        var printable = new StringBuilder(text.Length + 16);
        foreach (var c in text)
        {
            if (IsEscaped(c, keepLines))
            {
                printable.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:X4}");
            }
            else
            {
                printable.Append(c);
            }
        }

        return printable.ToString();
    }

    private static bool IsEscaped(char c, bool keepLines) => char.IsControl(c) && !(keepLines && c is '\n' or '\t');
}
