using System.Text;

namespace DanceMoE.Model.Tests;

public class CheckpointTests
{
    [Fact]
    public void Tiny_checkpoint_with_the_same_seed_has_the_same_bytes()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Sub("a"), TinyModels.Small(3));
        TinyCheckpoint.Write(dir.Sub("b"), TinyModels.Small(3));
        TinyCheckpoint.Write(dir.Sub("c"), TinyModels.Small(4));
        foreach (var file in new[] { "config.json", "model.safetensors", "tokenizer.json" })
        {
            Assert.Equal(File.ReadAllBytes(Path.Combine(dir.Sub("a"), file)), File.ReadAllBytes(Path.Combine(dir.Sub("b"), file)));
        }

        Assert.NotEqual(File.ReadAllBytes(Path.Combine(dir.Sub("a"), "model.safetensors")), File.ReadAllBytes(Path.Combine(dir.Sub("c"), "model.safetensors")));
    }

    [Fact]
    public void Tiny_checkpoint_has_the_mixtral_layout_and_a_byte_tokenizer()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, new TinyOptions { Seed = 1 });
        var checkpoint = Checkpoint.Open(dir.Path);
        var c = checkpoint.Config;
        Assert.Equal(("mixtral", 4, 16, 2, 128), (c.ModelType, c.NumLayers, c.NumExperts, c.TopK, c.HiddenSize));
        Assert.NotNull(checkpoint.Tokenizer);
        Assert.Equal(c.VocabSize, checkpoint.Tokenizer.VocabSize);
        Assert.True(checkpoint.Has("model.layers.3.block_sparse_moe.experts.15.w2.weight"));
        Assert.Equal(c.HiddenSize * c.IntermediateSize, checkpoint.Read(MixtralNames.Expert(3, 15, 2), c.HiddenSize, c.IntermediateSize).Length);
    }

    [Fact]
    public void Sharded_checkpoint_reads_the_same_weights_as_a_single_file()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Sub("single"), TinyModels.Small());
        TinyCheckpoint.Write(dir.Sub("sharded"), TinyModels.Small() with { MaxShardBytes = 40_000 });
        Assert.True(File.Exists(Path.Combine(dir.Sub("sharded"), Checkpoint.IndexFile)));
        Assert.True(Directory.GetFiles(dir.Sub("sharded"), "*.safetensors").Length > 1);
        var single = MoeWeights.Load(Checkpoint.Open(dir.Sub("single")));
        var sharded = MoeWeights.Load(Checkpoint.Open(dir.Sub("sharded")));
        Assert.Equal(single.LmHead, sharded.LmHead);
        Assert.Equal(single.Layers[1].Experts[3].W2, sharded.Layers[1].Experts[3].W2);
    }

    [Theory]
    [InlineData(TensorDtype.F16)]
    [InlineData(TensorDtype.BF16)]
    public void Half_precision_checkpoints_read_close_to_float32(TensorDtype dtype)
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Sub("f32"), TinyModels.Small());
        TinyCheckpoint.Write(dir.Sub("half"), TinyModels.Small() with { Dtype = dtype });
        var full = Checkpoint.Open(dir.Sub("f32"));
        var half = Checkpoint.Open(dir.Sub("half"));
        Assert.Equal(dtype, half.DtypeOf(MixtralNames.Embed));
        var c = full.Config;
        var a = full.Read(MixtralNames.Embed, c.VocabSize, c.HiddenSize);
        var b = half.Read(MixtralNames.Embed, c.VocabSize, c.HiddenSize);
        var tolerance = dtype == TensorDtype.F16 ? 1e-3 : 1e-2;
        Assert.All(a.Zip(b), p => Assert.True(Math.Abs(p.First - p.Second) <= tolerance * Math.Max(1, Math.Abs(p.First))));
    }

    [Fact]
    public void Truncated_safetensors_fails_naming_the_file_and_tensor()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());
        var path = Path.Combine(dir.Path, Checkpoint.SingleFile);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains("model.safetensors", ex.Message, StringComparison.Ordinal);
        Assert.Contains("truncated", ex.Message, StringComparison.Ordinal);
        Assert.Contains(MixtralNames.LmHead, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Safetensors_with_a_broken_header_fails_clearly()
    {
        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "bad.safetensors");
        var header = Encoding.UTF8.GetBytes("{\"w\": {\"dtype\": \"F32\", \"shape\": [2");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)header.Length), .. header]);
        var ex = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("bad.safetensors", ex.Message, StringComparison.Ordinal);
        Assert.Contains("JSON", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("config.json", "{", "{\"hidden_size\": 1, ")]
    [InlineData("tokenizer.json", "{", "{\"bos_token_id\": 1, ")]
    [InlineData(Checkpoint.IndexFile, "\"weight_map\": {", "\"weight_map\": {\"lm_head.weight\": \"x.safetensors\", ")]
    public void A_model_json_file_that_gives_a_key_twice_fails_as_one_line_naming_it(string file, string start, string withDuplicate)
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small() with { MaxShardBytes = 40_000 });
        var path = Path.Combine(dir.Path, file);
        var text = File.ReadAllText(path);
        var at = text.IndexOf(start, StringComparison.Ordinal);
        File.WriteAllText(path, string.Concat(text.AsSpan(0, at), withDuplicate, text.AsSpan(at + start.Length)));

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(dir.Path));

        Assert.StartsWith($"{path}: invalid JSON (", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void Safetensors_whose_header_gives_a_tensor_twice_fails_clearly()
    {
        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "twice.safetensors");
        var entry = "{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}";
        var header = Encoding.UTF8.GetBytes($"{{\"w\": {entry}, \"w\": {entry}}}");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)header.Length), .. header, 0, 0, 0, 0]);

        var ex = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(path));

        Assert.StartsWith($"{path}: safetensors header is not valid JSON (", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(float.PositiveInfinity, "Infinity")]
    [InlineData(float.NegativeInfinity, "-Infinity")]
    [InlineData(float.NaN, "NaN")]
    public void A_tensor_holding_a_non_finite_weight_fails_naming_it(float weight, string shown)
    {
        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "damaged.safetensors");
        SafeTensorsFile.Write(path, [("w", TensorDtype.F32, [3], SafeTensorsFile.Encode([1f, 2f, weight], TensorDtype.F32))]);

        var ex = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(path).ReadFloats("w"));

        Assert.Equal($"{path}: tensor 'w' holds {shown} at element 2: its weights are damaged", ex.Message);
    }

    [Fact]
    public void Safetensors_whose_header_puts_two_tensors_over_the_same_bytes_fails_naming_both()
    {
        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "overlap.safetensors");
        var header = Encoding.UTF8.GetBytes(
            "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)header.Length), .. header, .. new byte[12]]);

        var ex = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(path));

        Assert.Equal($"{path}: tensor 'b' (data bytes 4..12) overlaps tensor 'a' (0..8)", ex.Message);
    }

    [Fact]
    public void Safetensors_header_length_is_printed_unsigned()
    {
        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "bad.safetensors");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes(1UL << 63), .. "{}"u8]);

        var ex = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(path));

        Assert.Equal($"{path}: truncated or corrupt safetensors header (header length 9223372036854775808, file 10 bytes)", ex.Message);
    }

    [Fact]
    public void Tensor_with_the_wrong_shape_fails_naming_the_tensor_and_both_shapes()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());
        var config = Path.Combine(dir.Path, Checkpoint.ConfigFile);
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"intermediate_size\": 64", "\"intermediate_size\": 65", StringComparison.Ordinal));
        var ex = Assert.Throws<ModelFormatException>(() => MoeWeights.Load(Checkpoint.Open(dir.Path)));
        Assert.Contains("model.layers.0.block_sparse_moe.experts.0.w1.weight", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[64, 32]", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[65, 32]", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_tensor_fails_naming_it()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());
        var config = Path.Combine(dir.Path, Checkpoint.ConfigFile);
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"num_local_experts\": 4", "\"num_local_experts\": 5", StringComparison.Ordinal));
        var ex = Assert.Throws<ModelFormatException>(() => MoeWeights.Load(Checkpoint.Open(dir.Path)));
        Assert.Contains("model.layers.0.block_sparse_moe", ex.Message, StringComparison.Ordinal);
        Assert.Contains("missing", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Bad_config_json_fails_naming_the_file()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());
        File.WriteAllText(Path.Combine(dir.Path, Checkpoint.ConfigFile), "{ \"model_type\": \"mixtral\", ");
        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains("config.json", ex.Message, StringComparison.Ordinal);
        Assert.Contains("invalid JSON", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unsupported_model_type_is_rejected()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());
        var config = Path.Combine(dir.Path, Checkpoint.ConfigFile);
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"mixtral\"", "\"llama4\"", StringComparison.Ordinal));
        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains("config.json: unsupported model_type 'llama4' (supported: mixtral, olmoe, qwen2_moe, deepseek_v2)", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("config.json", "eos_token_id", "[\"a\"]", "config.json: 'eos_token_id' must be an integer or a non-empty list of integers (got [\"a\"])")]
    [InlineData("config.json", "eos_token_id", "[1.5]", "'eos_token_id' must be an integer or a non-empty list of integers")]
    [InlineData("config.json", "bos_token_id", "9999", "config.json: 'bos_token_id' must be a token of the vocabulary, 0 to 257 (got 9999)")]
    [InlineData("config.json", "eos_token_id", "-2", "'eos_token_id' must be a token of the vocabulary")]
    [InlineData("config.json", "rope_theta", "-1", "config.json: 'rope_theta' must be a positive number (got -1)")]
    [InlineData("config.json", "rms_norm_eps", "0", "config.json: 'rms_norm_eps' must be a positive number (got 0)")]
    [InlineData("config.json", "hidden_size", "2147483647", "config.json: 'hidden_size' must be 1 to 131,072 (got 2147483647)")]
    [InlineData("config.json", "vocab_size", "2147483647", "config.json: 'vocab_size' must be 1 to 4,194,304 (got 2147483647)")]
    [InlineData("config.json", "num_local_experts", "1000000", "config.json: 'num_local_experts' must be 1 to 65,536 (got 1000000)")]
    [InlineData("tokenizer.json", "bos_token_id", "9999", "tokenizer.json: byte tokenizer's bos_token_id must be 256 to 257, after the byte ids and inside the model's vocab_size 258 (got 9999)")]
    [InlineData("tokenizer.json", "eos_token_id", "3", "tokenizer.json: byte tokenizer's eos_token_id must follow the 256 byte ids (got 3)")]
    [InlineData("tokenizer.json", "dancemoe_tokenizer", "5", null)]
    public void Hostile_config_or_tokenizer_values_fail_naming_the_file_and_key(string file, string key, string json, string? error)
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());
        var path = Path.Combine(dir.Path, file);
        var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        root[key] = System.Text.Json.Nodes.JsonNode.Parse(json);
        File.WriteAllText(path, root.ToJsonString());
        if (error is null)
        {
            Assert.Null(Checkpoint.Open(dir.Path).Tokenizer);
            return;
        }

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains(error, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_tiny_checkpoint_too_large_to_build_in_memory_is_refused_before_anything_is_written()
    {
        using var dir = new TempDirectory();
        var options = new TinyOptions { Hidden = 8192, Layers = 256, Experts = 1024 };

        var ex = Assert.Throws<ArgumentException>(() => TinyCheckpoint.Write(dir.Sub("huge"), options));

        Assert.StartsWith("these options make at least 402,653,200 MiB of weights; a tiny checkpoint is built in memory and holds at most 2,048 MiB", ex.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(dir.Sub("huge")));
    }

    [Fact]
    public void Byte_tokenizer_round_trips_utf8_text()
    {
        var tokenizer = ByteTokenizer.Default;
        var ids = tokenizer.Encode("edge servers — share experts");
        Assert.Equal(tokenizer.BosTokenId, ids[0]);
        Assert.Equal("edge servers — share experts", tokenizer.Decode(ids));
    }
}
