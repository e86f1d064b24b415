using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Net.Mime;
using System.Text.Json;
using DanceMoE.Contracts;
using MassTransit;
using MassTransit.Serialization;

namespace DanceMoE.Edge;

/// <summary>
/// The expert batches' wire format: MassTransit's JSON envelope without the tensor, then the tensor's raw bytes
/// (<see cref="RunExpertBatch.Hidden"/> or <see cref="ExpertBatchResult.Output"/>), so a float costs 4 bytes, not 5.3 of
/// base64, and is neither encoded nor parsed. Body: int32 little-endian envelope length, the envelope, the tensor.
/// Peers ask for it per send (<see cref="ContentType"/>) and the experts queue answers in the content type it was asked in;
/// other senders keep MassTransit's JSON.
/// </summary>
public sealed class ExpertBatchSerializer : IMessageSerializer, IMessageDeserializer, ISerializerFactory
{
    public static readonly ContentType BinaryContentType = new("application/vnd.dancemoe.expert-batch");

    public static readonly ExpertBatchSerializer Instance = new();

    private static readonly SystemTextJsonMessageSerializer Json = new();

    public ContentType ContentType => BinaryContentType;

    /// <summary>True when <paramref name="context"/>'s message came in this format: its answer goes back in it.</summary>
    public static bool CameIn(ConsumeContext context) =>
        context?.ReceiveContext.ContentType?.MediaType == BinaryContentType.MediaType;

    /// <summary>Bytes of <paramref name="message"/> in this format, without the envelope's headers.</summary>
    public static int MessageBytes<T>(T message)
        where T : class
    {
        var (stripped, tensor) = Split(message);
        return sizeof(int) + JsonSerializer.SerializeToUtf8Bytes(stripped, SystemTextJsonMessageSerializer.Options).Length + tensor.Length;
    }

    /// <summary>Bytes of <paramref name="message"/> as MassTransit's JSON, without the envelope's headers.</summary>
    public static int JsonMessageBytes<T>(T message)
        where T : class => JsonSerializer.SerializeToUtf8Bytes(message, SystemTextJsonMessageSerializer.Options).Length;

    /// <summary>
    /// <paramref name="message"/> as the expert lane carries it (<see cref="ExpertLane"/>): the same layout without
    /// MassTransit's envelope: int32 little-endian length of the message's JSON without its tensor, the JSON, the tensor.
    /// </summary>
    public static byte[] Encode<T>(T message)
        where T : class
    {
        var (stripped, tensor) = Split(message);
        var json = JsonSerializer.SerializeToUtf8Bytes(stripped, stripped.GetType(), SystemTextJsonMessageSerializer.Options);
        var body = new byte[sizeof(int) + json.Length + tensor.Length];
        BinaryPrimitives.WriteInt32LittleEndian(body, json.Length);
        json.CopyTo(body.AsSpan(sizeof(int)));
        tensor.CopyTo(body.AsSpan(sizeof(int) + json.Length));
        return body;
    }

    /// <summary>The message of a lane body written by <see cref="Encode"/>; <see cref="InvalidDataException"/> when it is none.</summary>
    public static T Decode<T>(ReadOnlySpan<byte> body)
        where T : class
    {
        var length = body.Length >= sizeof(int) ? BinaryPrimitives.ReadInt32LittleEndian(body) : -1;
        if (length < 0 || length > body.Length - sizeof(int))
        {
            throw new InvalidDataException($"an expert batch body of {body.Length} bytes names a message of {length} bytes");
        }

        T? message;
        try
        {
            message = JsonSerializer.Deserialize<T>(body.Slice(sizeof(int), length), SystemTextJsonMessageSerializer.Options);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"an expert batch body's message is not a {typeof(T).Name}: {ex.Message}", ex);
        }

        return Join(message ?? throw new InvalidDataException($"an expert batch body's message is not a {typeof(T).Name}"), body[(sizeof(int) + length)..].ToArray());
    }

    public IMessageSerializer CreateSerializer() => this;

    public IMessageDeserializer CreateDeserializer() => this;

    public MessageBody GetMessageBody<T>(SendContext<T> context)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(context);
        var (message, tensor) = Split(context.Message);
        var envelope = JsonSerializer.SerializeToUtf8Bytes(new JsonMessageEnvelope(context, message), SystemTextJsonMessageSerializer.Options);
        var body = new byte[sizeof(int) + envelope.Length + tensor.Length];
        BinaryPrimitives.WriteInt32LittleEndian(body, envelope.Length);
        envelope.CopyTo(body.AsSpan(sizeof(int)));
        tensor.CopyTo(body.AsSpan(sizeof(int) + envelope.Length));
        return new BytesMessageBody(body);
    }

    public ConsumeContext Deserialize(ReceiveContext receiveContext)
    {
        ArgumentNullException.ThrowIfNull(receiveContext);
        return new BodyConsumeContext(receiveContext, Deserialize(receiveContext.Body, receiveContext.TransportHeaders, receiveContext.InputAddress));
    }

    public SerializerContext Deserialize(MessageBody body, Headers headers, Uri? destinationAddress = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        var bytes = body.GetBytes();
        var length = bytes.Length >= sizeof(int) ? BinaryPrimitives.ReadInt32LittleEndian(bytes) : -1;
        if (length < 0 || length > bytes.Length - sizeof(int))
        {
            throw new InvalidDataException($"an expert batch body of {bytes.Length} bytes names an envelope of {length} bytes");
        }

        var envelope = Json.Deserialize(new BytesMessageBody(bytes.AsSpan(sizeof(int), length).ToArray()), headers, destinationAddress);
        return new TensorSerializerContext(envelope, bytes.AsSpan(sizeof(int) + length).ToArray());
    }

    public MessageBody GetMessageBody(string text) => new Base64MessageBody(text);

    public void Probe(ProbeContext context) => context?.CreateScope("dancemoe-expert-batch").Add("contentType", ContentType.MediaType);

    private static (object Message, byte[] Tensor) Split<T>(T message)
        where T : class => message switch
        {
            RunExpertBatch batch => (batch with { Hidden = [] }, batch.Hidden),
            ExpertBatchResult result => (result with { Output = [] }, result.Output),
            _ => (message, []),
        };

    private static T Join<T>(T message, byte[] tensor) => message switch
    {
        RunExpertBatch batch => (T)(object)(batch with { Hidden = tensor }),
        ExpertBatchResult result => (T)(object)(result with { Output = tensor }),
        _ => message,
    };

    /// <summary>MassTransit's JSON context of the envelope, with the tensor put back into the message it was taken from.</summary>
    private sealed class TensorSerializerContext(SerializerContext envelope, byte[] tensor) : SerializerContext
    {
        public Guid? MessageId => envelope.MessageId;

        public Guid? RequestId => envelope.RequestId;

        public Guid? CorrelationId => envelope.CorrelationId;

        public Guid? ConversationId => envelope.ConversationId;

        public Guid? InitiatorId => envelope.InitiatorId;

        public DateTime? ExpirationTime => envelope.ExpirationTime;

        public Uri? SourceAddress => envelope.SourceAddress;

        public Uri? DestinationAddress => envelope.DestinationAddress;

        public Uri? ResponseAddress => envelope.ResponseAddress;

        public Uri? FaultAddress => envelope.FaultAddress;

        public DateTime? SentTime => envelope.SentTime;

        public Headers Headers => envelope.Headers;

        public HostInfo Host => envelope.Host;

        public string[] SupportedMessageTypes => envelope.SupportedMessageTypes;

        public bool IsSupportedMessageType<T>()
            where T : class => envelope.IsSupportedMessageType<T>();

        public bool IsSupportedMessageType(Type messageType) => envelope.IsSupportedMessageType(messageType);

        public bool TryGetMessage<T>([NotNullWhen(true)] out T? message)
            where T : class
        {
            if (!envelope.TryGetMessage(out T? found) || found is null)
            {
                message = null;
                return false;
            }

            message = Join(found, tensor);
            return true;
        }

        public bool TryGetMessage(Type messageType, [NotNullWhen(true)] out object? message)
        {
            if (!envelope.TryGetMessage(messageType, out var found) || found is null)
            {
                message = null;
                return false;
            }

            message = Join(found, tensor);
            return true;
        }

        public IMessageSerializer GetMessageSerializer() => envelope.GetMessageSerializer();

        public IMessageSerializer GetMessageSerializer<T>(MessageEnvelope envelope1, T message)
            where T : class => envelope.GetMessageSerializer(envelope1, message);

        public IMessageSerializer GetMessageSerializer(object message, string[] messageTypes) => envelope.GetMessageSerializer(message, messageTypes);

        public Dictionary<string, object> ToDictionary<T>(T? message)
            where T : class => envelope.ToDictionary(message);

        public T? DeserializeObject<T>(object? value, T? defaultValue = null)
            where T : class => envelope.DeserializeObject(value, defaultValue);

        public T? DeserializeObject<T>(object? value, T? defaultValue = null)
            where T : struct => envelope.DeserializeObject(value, defaultValue);

        public MessageBody SerializeObject(object? value) => envelope.SerializeObject(value);
    }
}
