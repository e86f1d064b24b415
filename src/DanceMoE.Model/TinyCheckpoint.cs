using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DanceMoE.Model;

/// <summary>
/// Writes a deterministic random Mixtral-layout checkpoint (same options, same bytes) with a byte-level tokenizer:
/// test data, and the fallback when the trained default model is absent.
/// </summary>
public static class TinyCheckpoint
{
    public static MoeConfig Write(string directory, TinyOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var tokenizer = ByteTokenizer.Default;
        var config = new MoeConfig
        {
            VocabSize = tokenizer.VocabSize,
            HiddenSize = options.Hidden,
            IntermediateSize = options.Ffn,
            NumLayers = options.Layers,
            NumHeads = options.Heads,
            NumKvHeads = options.KvHeads,
            HeadDim = options.Hidden / options.Heads,
            NumExperts = options.Experts,
            TopK = options.TopK,
            RmsNormEps = 1e-5,
            RopeTheta = 10000,
            MaxPositions = options.MaxPositions,
            BosTokenId = tokenizer.BosTokenId,
            EosTokenId = tokenizer.EosTokenId,
            TorchDtype = options.Dtype switch
            {
                TensorDtype.F32 => "float32",
                TensorDtype.F16 => "float16",
                _ => "bfloat16",
            },
        };
        if (options.Hidden % options.Heads != 0)
        {
            throw new ArgumentException($"hidden size {options.Hidden} is not a multiple of {options.Heads} heads", nameof(options));
        }

        config.Validate("tiny options");
        Directory.CreateDirectory(directory);
        var tensors = Tensors(config, options).ToList();
        WriteShards(directory, tensors, options.MaxShardBytes);
        File.WriteAllText(Path.Combine(directory, Checkpoint.ConfigFile), Json(config.ToJson()));
        tokenizer.Save(directory);
        return config;
    }

    private static IEnumerable<(string Name, TensorDtype Dtype, long[] Shape, byte[] Data)> Tensors(MoeConfig c, TinyOptions o)
    {
        var rng = new SplitMix64(o.Seed);
        (string, TensorDtype, long[], byte[]) Random(string name, double scale, params long[] shape)
        {
            var values = new float[shape.Aggregate(1L, (a, b) => a * b)];
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = (float)(((rng.NextDouble() * 2) - 1) * scale);
            }

            return (name, o.Dtype, shape, SafeTensorsFile.Encode(values, o.Dtype));
        }

        (string, TensorDtype, long[], byte[]) Norm(string name, int width)
        {
            var values = new float[width];
            for (var i = 0; i < width; i++)
            {
                values[i] = (float)(1 + (((rng.NextDouble() * 2) - 1) * 0.1));
            }

            return (name, o.Dtype, [width], SafeTensorsFile.Encode(values, o.Dtype));
        }

        double h = c.HiddenSize;
        var uniform = Math.Sqrt(3);
        yield return Random(MixtralNames.Embed, uniform, c.VocabSize, c.HiddenSize);
        for (var l = 0; l < c.NumLayers; l++)
        {
            yield return Norm(MixtralNames.InputNorm(l), c.HiddenSize);
            yield return Random(MixtralNames.Attention(l, 'q'), uniform / Math.Sqrt(h), c.QueryWidth, c.HiddenSize);
            yield return Random(MixtralNames.Attention(l, 'k'), uniform / Math.Sqrt(h), c.KvWidth, c.HiddenSize);
            yield return Random(MixtralNames.Attention(l, 'v'), uniform / Math.Sqrt(h), c.KvWidth, c.HiddenSize);
            yield return Random(MixtralNames.Attention(l, 'o'), uniform / Math.Sqrt(c.QueryWidth), c.HiddenSize, c.QueryWidth);
            yield return Norm(MixtralNames.PostNorm(l), c.HiddenSize);
            yield return Random(MixtralNames.Router(l), uniform / Math.Sqrt(h), c.NumExperts, c.HiddenSize);
            for (var e = 0; e < c.NumExperts; e++)
            {
                yield return Random(MixtralNames.Expert(l, e, 1), uniform / Math.Sqrt(h), c.IntermediateSize, c.HiddenSize);
                yield return Random(MixtralNames.Expert(l, e, 2), uniform / Math.Sqrt(c.IntermediateSize), c.HiddenSize, c.IntermediateSize);
                yield return Random(MixtralNames.Expert(l, e, 3), uniform / Math.Sqrt(h), c.IntermediateSize, c.HiddenSize);
            }
        }

        yield return Norm(MixtralNames.FinalNorm, c.HiddenSize);
        yield return Random(MixtralNames.LmHead, uniform / Math.Sqrt(h), c.VocabSize, c.HiddenSize);
    }

    private static void WriteShards(string directory, List<(string Name, TensorDtype Dtype, long[] Shape, byte[] Data)> tensors, long maxShardBytes)
    {
        if (maxShardBytes <= 0)
        {
            SafeTensorsFile.Write(Path.Combine(directory, Checkpoint.SingleFile), tensors);
            return;
        }

        var shards = new List<List<(string, TensorDtype, long[], byte[])>> { new() };
        long size = 0;
        foreach (var tensor in tensors)
        {
            if (size > 0 && size + tensor.Data.Length > maxShardBytes)
            {
                shards.Add([]);
                size = 0;
            }

            shards[^1].Add(tensor);
            size += tensor.Data.Length;
        }

        var weightMap = new JsonObject();
        for (var i = 0; i < shards.Count; i++)
        {
            var file = string.Create(CultureInfo.InvariantCulture, $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors");
            SafeTensorsFile.Write(Path.Combine(directory, file), shards[i]);
            foreach (var (name, _, _, _) in shards[i])
            {
                weightMap[name] = file;
            }
        }

        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = tensors.Sum(t => (long)t.Data.Length) },
            ["weight_map"] = weightMap,
        };
        File.WriteAllText(Path.Combine(directory, Checkpoint.IndexFile), Json(index));
    }

    private static string Json(JsonNode node) => node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
}
