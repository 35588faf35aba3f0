using System.Collections.Concurrent;

namespace ResearchKit.Notebooks;

/// <summary>
/// Values on their way between languages (#!share, #!set). The receiving kernel declares the variable with a typed
/// expression that takes the value from here, so the value crosses by reference and keeps its type as that language
/// names it: F# Interactive's AddBoundValue gives `List&lt;int&gt;` an Int32 F# does not take for its `int`.
/// </summary>
public static class SharedValues
{
    static readonly ConcurrentDictionary<string, object?> waiting = new();

    internal static string Put(object? value)
    {
        var key = Guid.NewGuid().ToString("N");
        waiting[key] = value;
        return key;
    }

    /// <summary>Drops a value whose declaration did not compile.</summary>
    internal static void Discard(string key) => waiting.TryRemove(key, out _);

    /// <summary>The value put under <paramref name="key"/>, once (called by the declarations kernels run).</summary>
    public static object? Take(string key) =>
        waiting.TryRemove(key, out var value) ? value : throw new KeyNotFoundException($"no shared value {key} is waiting");

    /// <summary>The types to declare a shared value with, most specific first: its own, its base types, then object.</summary>
    internal static IEnumerable<Type> TypesToTry(object? value)
    {
        for (var type = value?.GetType(); type is not null && type != typeof(object); type = type.BaseType)
            if (TypeName(type, "global::") is not null) yield return type;
        yield return typeof(object);
    }

    /// <summary>
    /// A type as C# (<paramref name="global"/> "global::") or F# ("global.") source names it; null when source cannot
    /// (not public, generic nested types, types of assemblies that exist only in memory).
    /// </summary>
    public static string? TypeName(Type type, string global)
    {
        if (type.IsArray)
            return TypeName(type.GetElementType()!, global) is { } element ? $"{element}[{new string(',', type.GetArrayRank() - 1)}]" : null;
        if (!type.IsVisible || type.IsPointer || type.IsByRef || type.IsGenericParameter || type.Assembly.IsDynamic) return null;
        if (type.IsNested) return type.IsGenericType || TypeName(type.DeclaringType!, global) is not { } outer ? null : $"{outer}.{type.Name}";
        var name = $"{global}{(type.Namespace is { } ns ? ns + "." : "")}{(type.IsGenericType ? type.Name[..type.Name.IndexOf('`')] : type.Name)}";
        if (!type.IsGenericType) return name;
        var arguments = type.GetGenericArguments().Select(a => TypeName(a, global)).ToList();
        return arguments.Any(a => a is null) ? null : $"{name}<{string.Join(", ", arguments)}>";
    }
}
