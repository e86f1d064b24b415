namespace DanceMoE.Model;

public sealed record TinyOptions
{
    public ulong Seed { get; init; }

    /// <summary>The `model_type` whose layout and structure the checkpoint has (see <see cref="ModelFamilies"/>).</summary>
    public string Family { get; init; } = MoeConfig.Mixtral;

    public int Layers { get; init; } = 4;
    public int Experts { get; init; } = 16;
    public int TopK { get; init; } = 2;
    public int Hidden { get; init; } = 128;
    public int Heads { get; init; } = 4;
    public int KvHeads { get; init; } = 2;
    public int MaxPositions { get; init; } = 1024;
    public TensorDtype Dtype { get; init; } = TensorDtype.F32;

    /// <summary>0 writes one `model.safetensors`; otherwise shards of at most this many bytes plus the index.</summary>
    public long MaxShardBytes { get; init; }

    /// <summary>Width of one attention head; null: <see cref="Hidden"/> / <see cref="Heads"/>.</summary>
    public int? HeadDim { get; init; }

    /// <summary>The experts' intermediate size; null: twice <see cref="Hidden"/>.</summary>
    public int? ExpertIntermediate { get; init; }

    public int Ffn => ExpertIntermediate ?? Hidden * 2;
}
