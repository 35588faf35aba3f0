namespace ResearchKit;

/// <summary>
/// The per-user cache ResearchKit fills on demand (restored packages, patched native libraries, inlined web libraries):
/// $XDG_CACHE_HOME/researchkit, else ~/.cache/researchkit. Deleting it is always safe; what is needed is fetched again.
/// </summary>
public static class UserCache
{
    public static string Folder(params string[] parts)
    {
        var root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg
            ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine([root, "researchkit", .. parts]);
    }
}
