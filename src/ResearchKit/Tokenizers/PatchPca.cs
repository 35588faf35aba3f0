using ResearchKit.Training;
using static TorchSharp.torch;

namespace ResearchKit.Tokenizers;

/// <summary>
/// PCA of flattened patches (MAE Table 1d, "PCA" target: the reconstruction target is a patch's largest PCA
/// coefficients). The mean, the orthonormal basis (columns sorted by explained variance) and each component's variance
/// are buffers, so a checkpoint carries the fitted basis. With every component, <see cref="Decode"/> ∘ <see cref="Encode"/>
/// is the identity up to float rounding; with fewer it is the best rank-k reconstruction in squared error.
/// </summary>
public sealed class PatchPca : nn.Module, IWeightsLoaded
{
    public int Components { get; }
    public int PatchDim { get; }

    /// <summary>
    /// Whether <see cref="Fit"/> has run (a buffer, so a loaded checkpoint knows). Read from the device once, then kept on
    /// the host: the MAE step asks every time.
    /// </summary>
    public bool IsFitted => isFitted ??= fitted.item<float>() > 0;

    bool? isFitted;

    public void OnWeightsLoaded() => isFitted = null;

    readonly Tensor mean;       // [D]
    readonly Tensor basis;      // [D, k]: column i is the i-th principal direction
    readonly Tensor variance;   // [D]: variance along every direction, descending
    readonly Tensor fitted;     // [1]: 1 once fitted

    public PatchPca(int patchDim, int components) : base(nameof(PatchPca))
    {
        if (components < 1 || components > patchDim)
            throw new ResearchKitException($"PCA: the number of components must be in 1 … {patchDim} (the patch dimension p·p·C); got {components}");
        PatchDim = patchDim;
        Components = components;
        mean = zeros(patchDim);
        basis = zeros(patchDim, components);
        variance = zeros(patchDim);
        fitted = zeros(1);
        RegisterComponents();
    }

    /// <summary>Fits mean and basis to patches [N, D] (any leading shape, flattened), in float64 for a stable eigendecomposition.</summary>
    public void Fit(Tensor patches)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = patches.detach().reshape(-1, PatchDim).to_type(ScalarType.Float64);
        if (x.shape[0] < 2) throw new ResearchKitException($"PCA: needs at least 2 patches to fit; got {x.shape[0]}");
        var mu = x.mean(new long[] { 0 });
        var centred = x - mu;
        var covariance = centred.t().mm(centred) / (x.shape[0] - 1);
        var (values, vectors) = linalg.eigh(covariance);                  // ascending
        var order = values.argsort(descending: true);
        var directions = vectors.index_select(1, order);
        // A deterministic sign per direction (largest entry positive), so the same data give the same coefficients.
        directions = Signed(directions);
        mean.copy_(mu.to_type(ScalarType.Float32));
        basis.copy_(directions[.., ..Components].to_type(ScalarType.Float32));
        variance.copy_(values.index_select(0, order).clamp_min(0).to_type(ScalarType.Float32));
        fitted.fill_(1);
        isFitted = true;
    }

    static Tensor Signed(Tensor directions)
    {
        var largest = directions.abs().argmax(0, keepdim: true);
        var sign = directions.gather(0, largest).sign();
        return directions * where(sign.eq(0), ones_like(sign), sign);
    }

    /// <summary>Share of the patches' variance the kept components explain (0..1).</summary>
    public double ExplainedVariance
    {
        get
        {
            using var scope = NewDisposeScope();
            double total = variance.sum().item<float>();
            return total > 0 ? variance[..Components].sum().item<float>() / total : double.NaN;
        }
    }

    /// <summary>patches [..., D] → coefficients [..., k].</summary>
    public Tensor Encode(Tensor patches)
    {
        RequireFitted();
        return (patches - mean).matmul(basis);
    }

    /// <summary>coefficients [..., k] → patches [..., D].</summary>
    public Tensor Decode(Tensor coefficients)
    {
        RequireFitted();
        return coefficients.matmul(basis.t()) + mean;
    }

    void RequireFitted()
    {
        if (!IsFitted) throw new ResearchKitException("PCA: not fitted yet; call Fit on training patches first");
    }
}
