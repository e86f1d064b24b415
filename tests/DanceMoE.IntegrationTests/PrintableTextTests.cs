using DanceMoE.Hosting;

namespace DanceMoE.IntegrationTests;

public sealed class PrintableTextTests
{
    [Theory]
    [InlineData("plain text, ünïcode ✓", false, "plain text, ünïcode ✓")]
    [InlineData("\u001b]0;pwned\u0007\u001b[2Jred", false, "\\u001B]0;pwned\\u0007\\u001B[2Jred")]
    [InlineData("a\nb\tc\rd\u007fe\u009bf", true, "a\nb\tc\\u000Dd\\u007Fe\\u009Bf")]
    [InlineData("a\nb\tc", false, "a\\u000Ab\\u0009c")]
    public void Control_characters_are_shown_escaped_and_line_breaks_kept_only_when_asked(string text, bool keepLines, string shown)
    {
        Assert.Equal(shown, PrintableText.Of(text, keepLines));
    }
}
