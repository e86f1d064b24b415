namespace DanceMoE.Placement.Tests;

public class TraceAndStageTests
{
    [Fact]
    public void A_trace_line_is_tab_separated_ids_then_two_tabs_then_weights()
    {
        var text = "1\t2\t3\t4\t\t0.1\t0.2\t0.3\t0.4\n5\t6\t\t0.5\t0.5\n";
        var sequences = TraceReader.ReadLayer(new StringReader(text), 2, 8);
        Assert.Equal(2, sequences.Count);
        Assert.Equal([1, 2, 3, 4], sequences[0]);
        Assert.Equal([5, 6], sequences[1]);
    }

    [Fact]
    public void A_line_that_is_not_whole_tokens_is_rejected_with_its_number()
    {
        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(new StringReader("1\t2\t\t0.5\t0.5\n1\t2\t3\t\t1\t1\t1\n"), 2, 8));
        Assert.Contains("line 2", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_endless_line_is_refused_with_its_number_once_it_passes_the_longest_line_read()
    {
        // As /dev/zero given for a trace file: one line that never ends.
        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(new EndlessAfter("1\t2\n"), 2, 8));

        Assert.StartsWith("line 2 is longer than ", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Lines_may_end_in_crlf_or_cr_and_the_last_needs_no_end()
    {
        var sequences = TraceReader.ReadLayer(new StringReader("1\t2\r\n3\t4\r5\t6"), 2, 8);

        Assert.Equal([[1, 2], [3, 4], [5, 6]], sequences);
    }

    [Fact]
    public void A_token_that_is_no_expert_id_is_quoted_short_with_its_control_characters_escaped()
    {
        // As a binary file given for a trace: one "token" of megabytes, with escape sequences for the terminal.
        var garbage = "\u001b[2J\u202e" + new string('x', 1 << 20);

        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(new StringReader($"1\t2\n{garbage}\t3\n"), 2, 8));

        Assert.Equal($@"line 2: '\u001B[2J\u202E{new string('x', 27)}'... is not an expert id below 8", error.Message);
    }

    [Fact]
    public void An_id_followed_by_a_nul_is_not_an_expert_id()
    {
        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(new StringReader("1\0\t2\n"), 2, 8));

        Assert.Equal(@"line 1: '1\u0000' is not an expert id below 8", error.Message);
    }

    [Fact]
    public void A_backslash_in_a_quoted_token_is_escaped_so_it_reads_apart_from_an_escaped_character()
    {
        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(new StringReader("1\\u0000\t2\n"), 2, 8));

        Assert.Equal(@"line 1: '1\u005Cu0000' is not an expert id below 8", error.Message);
    }

    [Fact]
    public void A_token_that_lists_one_expert_twice_is_rejected_with_its_line_and_token()
    {
        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(new StringReader("1\t2\t3\t4\n5\t6\t7\t7\n"), 2, 8));

        Assert.Equal("line 2: token 2 lists expert 7 twice among its top-2", error.Message);
    }

    [Fact]
    public void A_crlf_split_between_two_reads_ends_one_line_not_two()
    {
        // The \r is the last character of the reader's first 64 Ki block, its \n the first of the next.
        var first = "1\t2" + new string('\t', (64 * 1024) - 4);

        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(new StringReader($"{first}\r\nx\t3\n"), 2, 8));

        Assert.Equal("line 2: 'x' is not an expert id below 8", error.Message);
    }

    [Fact]
    public void A_line_of_exactly_the_longest_length_is_read_and_one_character_more_is_refused()
    {
        var longest = "1\t2" + new string('\t', TraceReader.MaxLineChars - 3);

        Assert.Equal([[1, 2], [3, 4]], TraceReader.ReadLayer(new StringReader($"{longest}\n3\t4"), 2, 8));
        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(new StringReader($"3\t4\n{longest}\t"), 2, 8));
        Assert.Equal("line 2 is longer than 4,194,304 characters", error.Message);
    }

    [Theory]
    [InlineData("utf-16", "UTF-16 little-endian")]
    [InlineData("utf-16BE", "UTF-16 big-endian")]
    [InlineData("utf-32", "UTF-32 little-endian")]
    public void A_file_with_a_utf16_or_utf32_byte_order_mark_is_refused_as_no_utf8_trace(string encodingName, string mark)
    {
        var encoding = System.Text.Encoding.GetEncoding(encodingName);
        using var file = new MemoryStream([.. encoding.GetPreamble(), .. encoding.GetBytes("1\t2\n")]);

        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(file, 2, 8));

        Assert.Equal($"starts with a {mark} byte order mark: trace files are UTF-8 text", error.Message);
    }

    [Fact]
    public void A_file_with_a_utf8_byte_order_mark_is_read_without_it()
    {
        using var file = new MemoryStream([0xEF, 0xBB, 0xBF, .. "1\t2\n3\t4\n"u8]);

        Assert.Equal([[1, 2], [3, 4]], TraceReader.ReadLayer(file, 2, 8));
    }

    [Fact]
    public void A_file_that_never_ends_is_refused_once_it_passes_the_largest_file_read()
    {
        // Each line's weights are never parsed, so the lines hold few ids and the test little memory.
        var error = Assert.Throws<FormatException>(() => TraceReader.ReadLayer(new Repeating("1\t2\t\t" + new string('0', 1 << 20) + "\n"), 2, 8));

        Assert.Equal("longer than 67,108,864 characters, the most a trace file may hold", error.Message);
    }

    [Fact]
    public void Layers_of_one_domain_must_agree_on_their_sequences()
    {
        IReadOnlyList<int[]> one = [[1, 2, 3, 4]];
        IReadOnlyList<int[]> other = [[1, 2]];
        Assert.Throws<FormatException>(() => TraceReader.Join(0, [one, other], 2));
        var request = Assert.Single(TraceReader.Join(3, [one, one], 2));
        Assert.Equal(3, request.Server);
        Assert.Equal(2, request.Tokens);
    }

    [Fact]
    public void History_is_the_first_half_of_each_servers_requests()
    {
        var requests = Enumerable.Range(0, 5).Select(i => new TraceRequest(i % 2, i + 1, [])).ToList();
        var (history, eval) = Workload.SplitHalves(requests);
        Assert.Equal([1, 2], history.Requests.Select(r => r.Tokens).Order());
        Assert.Equal(3, eval.Requests.Count);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Dancemoe_stage_one_gives_every_layer_enough_slots_and_uses_each_servers_memory(int seed)
    {
        var problem = Instances.Random(seed);
        var k = DanceMoePlacement.SlotsPerLayer(problem);
        var slots = problem.Slots();
        for (var l = 0; l < problem.Model.Layers; l++)
        {
            Assert.True(Enumerable.Range(0, slots.Length).Sum(n => k[n, l]) >= problem.Model.Experts);
        }

        for (var n = 0; n < slots.Length; n++)
        {
            var given = Enumerable.Range(0, problem.Model.Layers).Sum(l => k[n, l]);
            Assert.Equal(Math.Min(slots[n], problem.Model.ExpertCount), given);
        }
    }

    [Fact]
    public void Eplb_gives_the_heaviest_expert_the_most_replicas()
    {
        var problem = Instances.Tiny([[50, 1, 1, 1], [50, 1, 1, 1]], [3, 3]);
        var placement = new EplbPlacement().Place(problem);
        Assert.Equal(2, placement.Replicas(0, 0));
        Assert.Empty(placement.Violations(problem.Model, problem.Cluster));
    }

    /// <summary>One line over and over, without end.</summary>
    private sealed class Repeating(string line) : TextReader
    {
        private int _position;

        public override int Read(Span<char> buffer)
        {
            for (var i = 0; i < buffer.Length; i++)
            {
                buffer[i] = line[_position];
                _position = (_position + 1) % line.Length;
            }

            return buffer.Length;
        }
    }

    /// <summary>A text, then '0' forever.</summary>
    private sealed class EndlessAfter(string start) : TextReader
    {
        private int _position;

        public override int Peek() => _position < start.Length ? start[_position] : '0';

        public override int Read() => _position < start.Length ? start[_position++] : '0';
    }
}
