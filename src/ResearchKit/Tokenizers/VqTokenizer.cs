using ResearchKit.Layers;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Tokenizers;

/// <summary>
/// VQ-VAE tokenizer (van den Oord et al., 2017): each patch's encoder output is replaced by its nearest codebook
/// vector; the decoder's gradient passes the quantisation unchanged (straight-through, §3.2); a commitment term keeps
/// the encoder near its codes. The codebook is not trained by the optimizer but by exponential moving averages of the
/// outputs assigned to each code (Appendix A.1).
/// A codebook collapses easily — a reference run here that started codes at N(0,1) and restarted late used 4 of 128 —
/// so codes start as encoder outputs of the first batch, and every <see cref="TokenizerConfig.RestartEvery"/> steps the
/// codes whose EMA share fell below <see cref="TokenizerConfig.DeadUsage"/> × 1/K restart at poorly represented outputs.
/// </summary>
public sealed class VqTokenizer : VisualTokenizer, IWeightsLoaded
{
    // EMA state: buffers (registered by RegisterComponents, saved with the weights), updated in place, never by the optimizer.
    readonly Tensor codebook;      // K, D
    readonly Tensor clusterSize;   // K: EMA count of assignments per code
    readonly Tensor embedSum;      // K, D: EMA sum of the outputs assigned to each code
    readonly Tensor steps;         // 1 (int64): training steps taken, for initialisation and the restart schedule

    public VqTokenizer(TokenizerConfig config) : base(config, config.CodeDim, nameof(VqTokenizer))
    {
        codebook = zeros(config.Codes, config.CodeDim);
        clusterSize = zeros(config.Codes);
        embedSum = zeros(config.Codes, config.CodeDim);
        steps = zeros(1, dtype: ScalarType.Int64);
        RegisterComponents();
    }

    /// <summary>The codebook [K, D] (a view of the buffer; read-only use).</summary>
    public Tensor Codebook => codebook;

    /// <summary>EMA assignment counts per code [K].</summary>
    public Tensor ClusterSize => clusterSize;

    /// <summary>Encoder outputs as rows [B·h·w, D] (raster order within each image) and the batch and grid sizes.</summary>
    (Tensor Rows, long B, long H, long W) EncodeRows(Tensor images)
    {
        var z = RunEncoder(images);                                                 // B, D, h, w
        long B = z.shape[0], H = z.shape[2], W = z.shape[3];
        return (z.permute(0, 2, 3, 1).reshape(-1, Config.CodeDim), B, H, W);
    }

    /// <summary>Index of the nearest code for each row [N, D] → [N] (squared distance expanded: no N×K×D tensor).</summary>
    Tensor Nearest(Tensor rows) =>
        (rows.square().sum(1, keepdim: true) - 2 * rows.mm(codebook.T) + codebook.square().sum(1).unsqueeze(0)).argmin(1);

    public override Tensor Encode(Tensor images)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (rows, B, H, W) = EncodeRows(images);
        return Nearest(rows).reshape(B, H, W).MoveToOuterDisposeScope();
    }

    protected override Tensor CodeVectors(Tensor codes) => codebook.index_select(0, codes);

    public override TokenizerOutput forward(Tensor images, Generator? generator)
    {
        var (rows, B, H, W) = EncodeRows(images);
        if (training) UpdateCodebook(rows, generator);
        var codes = Nearest(rows.detach());
        var quantized = codebook.index_select(0, codes);                            // N, D (a buffer: no gradient)
        var straight = rows + (quantized - rows).detach();                          // straight-through estimator
        var reconstruction = Mixed.Stack(decoder, straight.reshape(B, H, W, Config.CodeDim).permute(0, 3, 1, 2));
        var loss = functional.mse_loss(reconstruction, images) + Config.Commitment * functional.mse_loss(rows, quantized);
        return new TokenizerOutput(loss, reconstruction, Usage(codes, Config.Codes));
    }

    long? stepsTaken;   // the steps buffer, mirrored on the host: read once (after building or loading), then counted here

    public void OnWeightsLoaded() => stepsTaken = null;

    /// <summary>
    /// One EMA step (VQ-VAE Appendix A.1, Laplace-smoothed counts). The first step sets every code to an encoder output
    /// of this batch; every RestartEvery steps the dead codes restart at outputs drawn with probability ∝ squared
    /// distance to their nearest code (k-means++'s rule): uniform draws would mostly pick the background patches that
    /// dominate small grey images, where restarted codes die again. Nothing here waits for the device: the step count is
    /// kept on the host, assignments are summed by a matrix product (deterministic on CUDA, where index_add_ is not), and
    /// a restart draws one candidate per code and keeps it where the code is dead.
    /// </summary>
    void UpdateCodebook(Tensor rows, Generator? generator)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var z = rows.detach();
        long K = Config.Codes, N = z.shape[0];
        long step = stepsTaken ??= steps.item<long>();
        if (step == 0)
        {
            var first = Spread(z, K, generator);
            codebook.copy_(first);
            embedSum.copy_(first);
            clusterSize.fill_(1);
        }
        var assigned = functional.one_hot(Nearest(z), K).to_type(z.dtype);       // N, K
        double d = Config.Decay;
        clusterSize.mul_(d).add_(assigned.sum(dim: 0), alpha: 1 - d);
        embedSum.mul_(d).add_(assigned.T.mm(z), alpha: 1 - d);
        var total = clusterSize.sum();
        var smoothed = (clusterSize + 1e-5) / (total + K * 1e-5) * total;
        codebook.copy_(embedSum / smoothed.unsqueeze(1));
        steps.add_(1);
        stepsTaken = ++step;
        if (step % Config.RestartEvery != 0) return;
        var dead = clusterSize.lt(Config.DeadUsage * total / K).unsqueeze(1);      // K, 1
        var distance = (z - codebook.index_select(0, Nearest(z))).square().sum(1) + 1e-12;
        var fresh = z.index_select(0, Draws.Multinomial(generator, distance, K, replacement: K > N));   // K candidates
        codebook.copy_(where(dead, fresh, codebook));
        embedSum.copy_(where(dead, fresh, embedSum));
        clusterSize.masked_fill_(dead.squeeze(1), 1.0);
    }

    /// <summary>K rows of z spread out by k-means++ seeding (distinct outputs, not K copies of the background); all on z's device.</summary>
    static Tensor Spread(Tensor z, long K, Generator? generator)
    {
        long N = z.shape[0];
        var chosen = new List<Tensor> { Draws.Integers(generator, 0, N, [1], z.device) };
        var nearest = (z - z.index_select(0, chosen[0])).square().sum(1);
        for (long k = 1; k < K; k++)
        {
            var next = Draws.Multinomial(generator, nearest + 1e-12, 1);
            chosen.Add(next);
            nearest = minimum(nearest, (z - z.index_select(0, next)).square().sum(1));
        }
        return z.index_select(0, cat(chosen));
    }
}
