using Deedle;

namespace ResearchKit.Reporting;

/// <summary>Deedle frames from plain rows, for result tables in notebooks.</summary>
public static class Tables
{
    /// <summary>Rows of column → value (double or string) → a frame; numeric columns are double series.</summary>
    public static Frame<int, string> FromRows(IReadOnlyList<IReadOnlyDictionary<string, object>> rows)
    {
        var columns = rows.SelectMany(r => r.Keys).Distinct().ToList();
        var builder = new FrameBuilder.Columns<int, string>();
        foreach (var column in columns)
        {
            var values = rows.Select(r => r.TryGetValue(column, out var v) ? v : null).ToList();
            ISeries<int> s = values.All(v => v is null or double)
                ? new Series<int, double>(Enumerable.Range(0, rows.Count), values.Select(v => v is double d ? d : double.NaN))
                : new Series<int, string>(Enumerable.Range(0, rows.Count), values.Select(v => v?.ToString() ?? ""));
            builder.Add(column, s);
        }
        return builder.Frame;
    }

    public static Frame<int, string> FromDictionaries(IEnumerable<Dictionary<string, object>> rows) =>
        FromRows(rows.Select(r => (IReadOnlyDictionary<string, object>)r).ToList());
}
