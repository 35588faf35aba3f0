using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using ResearchKit.Models;

namespace ResearchKit.Methods;

/// <summary>
/// Every method, by name: the one place a new method is registered (its model file holds the rest). The JSON
/// options here let config.json and sweep results store any <see cref="MethodConfig"/> with a "name" discriminator.
/// </summary>
public static class MethodRegistry
{
    public static readonly IReadOnlyList<MethodInfo> All =
    [
        MaskedAutoencoder.Method,
        RotNet.Method,
        Beit.Method,
        ImageGpt.Method,
        Supervised.Method,
        DenoisingAutoencoder.Method,
        ContextEncoder.Method,
        Colorization.Method,
        SplitBrain.Method,
        SelfSupervisedGan.Method,
        Jem.Method,
        Gwtn.Method,
        Tsit.Method,
    ];

    public static IEnumerable<string> Names => All.Select(m => m.Name);

    public static MethodInfo Get(string name) => All.FirstOrDefault(m => m.Name == name)
        ?? throw new ResearchKitException($"unknown method '{name}'; expected one of: {string.Join(", ", Names)}");

    public static MethodInfo Of(MethodConfig config) => All.FirstOrDefault(m => m.ConfigType == config.GetType())
        ?? throw new ResearchKitException($"{config.GetType().Name} is not a registered method configuration");

    /// <summary>Serializer options for configurations, run folders and sweep results.</summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,   // NaN: "no pre-training loss" for untrained baselines
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
        TypeInfoResolver = new DefaultJsonTypeInfoResolver { Modifiers = { AddMethodTypes } },
        // A hand-edited file that drops a field without a default, or nulls one that cannot be null, is refused when read,
        // naming the field, instead of failing later with a NullReferenceException (issue 22, item 7).
        RespectRequiredConstructorParameters = true,
        RespectNullableAnnotations = true,
    };

    static void AddMethodTypes(JsonTypeInfo info)
    {
        if (info.Type != typeof(MethodConfig)) return;
        info.PolymorphismOptions = new JsonPolymorphismOptions
        {
            TypeDiscriminatorPropertyName = "name",
            UnknownDerivedTypeHandling = JsonUnknownDerivedTypeHandling.FailSerialization,
        };
        foreach (var method in All) info.PolymorphismOptions.DerivedTypes.Add(new JsonDerivedType(method.ConfigType, method.Name));
    }
}
