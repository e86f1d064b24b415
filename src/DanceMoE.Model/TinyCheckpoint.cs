using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DanceMoE.Model;

/// <summary>
/// Writes a deterministic random checkpoint of one family's layout (same options, same bytes) with a byte-level tokenizer:
/// test data, and the fallback when the trained default model is absent.
/// </summary>
public static class TinyCheckpoint
{
    /// <summary>Every tensor is generated before the file is written, so the weights must fit in memory with room to spare.</summary>
    public const long MaxWeightBytes = 2L << 30;

    public static MoeConfig Write(string directory, TinyOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (Problem(options) is { } problem)
        {
            throw new ArgumentException(problem, nameof(options));
        }

        var config = Config(options);
        Write(directory, config, options);
        return config;
    }

    /// <summary>Writes random weights of exactly <paramref name="config"/>'s structure (the seed, dtype and shards from <paramref name="options"/>).</summary>
    public static void Write(string directory, MoeConfig config, TinyOptions options)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(options);
        config.Validate("tiny options");
        var element = SafeTensorsFile.ElementSize(options.Dtype);
        var atLeast = ((long)config.RoutedLayers * config.NumExperts * 3 * config.HiddenSize * config.IntermediateSize * element)
            + (2L * config.VocabSize * config.HiddenSize * element);
        if (atLeast > MaxWeightBytes)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"these options make at least {atLeast / (1 << 20):N0} MiB of weights; a tiny checkpoint is built in memory and holds at most {MaxWeightBytes >> 20:N0} MiB"), nameof(options));
        }

        Directory.CreateDirectory(directory);
        var tensors = Tensors(config, options).ToList();
        WriteShards(directory, tensors, options.MaxShardBytes);
        File.WriteAllText(Path.Combine(directory, Checkpoint.ConfigFile), Json(config.ToJson()));
        ByteTokenizer.Default.Save(directory);
    }

    /// <summary>
    /// What is wrong with the options together, named as <c>dancemoe model tiny</c>'s options (the config's own checks
    /// name its keys, which the user did not write); null when nothing is.
    /// </summary>
    public static string? Problem(TinyOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var headDim = options.HeadDim ?? options.Hidden / options.Heads;
        var ropeDim = options.Family == MoeConfig.DeepseekV2 ? headDim / 2 : headDim;
        return options switch
        {
            _ when options.TopK > options.Experts => $"--top-k ({options.TopK}) exceeds --experts ({options.Experts})",
            { HeadDim: null } when options.Hidden % options.Heads != 0 => $"--hidden ({options.Hidden}) is not a multiple of --heads ({options.Heads})",
            _ when options.Family != MoeConfig.DeepseekV2 && options.Heads % options.KvHeads != 0 =>
                $"--heads ({options.Heads}) is not a multiple of --kv-heads ({options.KvHeads})",
            { HeadDim: null } when ropeDim < 2 || ropeDim % 2 != 0 =>
                $"--hidden ({options.Hidden}) / --heads ({options.Heads}) makes heads {headDim} wide; their RoPE part ({ropeDim}) must be even and at least 2",
            _ => null,
        };
    }

    /// <summary>The family's real structure at the options' widths: its dense first layer, shared experts, MLA and routing flags.</summary>
    public static MoeConfig Config(TinyOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var tokenizer = ByteTokenizer.Default;
        var headDim = options.HeadDim ?? options.Hidden / options.Heads;
        var common = new MoeConfig
        {
            ModelType = options.Family,
            VocabSize = tokenizer.VocabSize,
            HiddenSize = options.Hidden,
            IntermediateSize = options.Ffn,
            NumLayers = options.Layers,
            NumHeads = options.Heads,
            NumKvHeads = options.KvHeads,
            HeadDim = headDim,
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
        return options.Family switch
        {
            MoeConfig.Mixtral => common,
            MoeConfig.Olmoe => common with { NormTopKProb = false, QkNorm = true },
            MoeConfig.Qwen2Moe => common with
            {
                NormTopKProb = false,
                SharedIntermediateSize = options.Ffn * 2,
                SharedExpertGate = true,
                DenseIntermediateSize = options.Ffn * 2,
                QkvBias = true,
            },
            MoeConfig.DeepseekV2 => common with
            {
                NumKvHeads = options.Heads,
                HeadDim = headDim + (headDim / 2),
                NormTopKProb = false,
                DenseLayers = options.Layers > 1 ? [0] : [],
                DenseIntermediateSize = options.Ffn * 2,
                SharedIntermediateSize = options.Ffn * 2,
                Mla = new MlaConfig { KvLoraRank = options.Hidden / 2, QkNopeHeadDim = headDim, QkRopeHeadDim = headDim / 2, VHeadDim = headDim },
            },
            _ => throw new ArgumentException($"unknown family '{options.Family}' (supported: {string.Join(", ", ModelFamilies.Supported)})", nameof(options)),
        };
    }

    private static IEnumerable<(string Name, TensorDtype Dtype, long[] Shape, byte[] Data)> Tensors(MoeConfig c, TinyOptions o)
    {
        var rng = new SplitMix64(o.Seed);
        var uniform = Math.Sqrt(3);
        (string, TensorDtype, long[], byte[]) Scaled(string name, double scale, params long[] shape)
        {
            var values = new float[shape.Aggregate(1L, (a, b) => a * b)];
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = (float)(((rng.NextDouble() * 2) - 1) * scale);
            }

            return (name, o.Dtype, shape, SafeTensorsFile.Encode(values, o.Dtype));
        }

        // Biases small, projections scaled by their fan-in.
        (string, TensorDtype, long[], byte[]) Random(string name, params long[] shape) =>
            Scaled(name, shape.Length == 1 ? 0.1 : uniform / Math.Sqrt(shape[^1]), shape);

        (string, TensorDtype, long[], byte[]) Norm(string name, int width)
        {
            var values = new float[width];
            for (var i = 0; i < width; i++)
            {
                values[i] = (float)(1 + (((rng.NextDouble() * 2) - 1) * 0.1));
            }

            return (name, o.Dtype, [width], SafeTensorsFile.Encode(values, o.Dtype));
        }

        IEnumerable<(string, TensorDtype, long[], byte[])> Mlp(Func<string, string> name, int ffn)
        {
            yield return Random(name("gate"), ffn, c.HiddenSize);
            yield return Random(name("down"), c.HiddenSize, ffn);
            yield return Random(name("up"), ffn, c.HiddenSize);
        }

        var names = new TensorNames(c);
        long h = c.HiddenSize;
        yield return Scaled(TensorNames.Embed, uniform, c.VocabSize, h);
        for (var l = 0; l < c.NumLayers; l++)
        {
            yield return Norm(TensorNames.InputNorm(l), c.HiddenSize);
            string A(string part, string kind = "weight") => TensorNames.Attention(l, part, kind);
            if (c.Mla is { } mla)
            {
                if (mla.QLoraRank is { } qr)
                {
                    yield return Random(A("q_a_proj"), qr, h);
                    yield return Norm(A("q_a_layernorm"), qr);
                    yield return Random(A("q_b_proj"), c.QueryWidth, qr);
                }
                else
                {
                    yield return Random(A("q_proj"), c.QueryWidth, h);
                }

                yield return Random(A("kv_a_proj_with_mqa"), mla.KvLoraRank + mla.QkRopeHeadDim, h);
                yield return Norm(A("kv_a_layernorm"), mla.KvLoraRank);
                yield return Random(A("kv_b_proj"), c.NumHeads * (mla.QkNopeHeadDim + mla.VHeadDim), mla.KvLoraRank);
                yield return Random(A("o_proj"), h, c.NumHeads * mla.VHeadDim);
            }
            else
            {
                yield return Random(A("q_proj"), c.QueryWidth, h);
                yield return Random(A("k_proj"), c.KvWidth, h);
                yield return Random(A("v_proj"), c.KvWidth, h);
                yield return Random(A("o_proj"), h, c.QueryWidth);
                if (c.QkvBias)
                {
                    yield return Random(A("q_proj", "bias"), c.QueryWidth);
                    yield return Random(A("k_proj", "bias"), c.KvWidth);
                    yield return Random(A("v_proj", "bias"), c.KvWidth);
                }

                if (c.QkNorm)
                {
                    yield return Norm(A("q_norm"), c.QueryWidth);
                    yield return Norm(A("k_norm"), c.KvWidth);
                }
            }

            yield return Norm(TensorNames.PostNorm(l), c.HiddenSize);
            if (c.IsDenseLayer(l))
            {
                foreach (var t in Mlp(p => TensorNames.DenseMlp(l, p), c.DenseIntermediateSize))
                {
                    yield return t;
                }

                continue;
            }

            yield return Random(names.Router(l), c.NumExperts, h);
            for (var e = 0; e < c.NumExperts; e++)
            {
                foreach (var t in Mlp(p => names.Expert(l, e, p), c.IntermediateSize))
                {
                    yield return t;
                }
            }

            if (c.SharedIntermediateSize > 0)
            {
                foreach (var t in Mlp(p => names.Shared(l, p), c.SharedIntermediateSize))
                {
                    yield return t;
                }

                if (c.SharedExpertGate)
                {
                    yield return Random(TensorNames.SharedGate(l), 1, h);
                }
            }
        }

        yield return Norm(TensorNames.FinalNorm, c.HiddenSize);
        yield return Random(TensorNames.LmHead, c.VocabSize, h);
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
