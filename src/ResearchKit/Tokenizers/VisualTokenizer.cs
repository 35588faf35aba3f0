using ResearchKit.Layers;
using System.Text.Json.Serialization;
using ResearchKit.Data;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Tokenizers;

/// <summary>Which discrete bottleneck a visual tokenizer uses.</summary>
public enum TokenizerKind
{
    /// <summary>VQ-VAE (van den Oord et al., 2017): nearest-code quantisation, straight-through gradient, EMA codebook.</summary>
    Vq,
    /// <summary>Discrete VAE as DALL-E trained its own (Ramesh et al., 2021): Gumbel-softmax relaxation, temperature annealed, KL to a uniform prior.</summary>
    Dvae,
}

/// <summary>
/// A visual tokenizer's configuration: one code per <see cref="PatchSize"/>² patch, so the token grid lines up with a
/// ViT's patch grid (BEiT §2.2). Defaults are BEiT's: 8192 codes (DALL-E's dVAE), 224² images, patch 16. The VQ
/// settings follow VQ-VAE (commitment β = 0.25, EMA codebook, their Appendix A.1); the dVAE settings follow DALL-E
/// (§2.1 and Appendix A.2: temperature annealed from 1 to 1/16, KL weight raised from 0 to 6.6), with the annealing
/// compressed to <see cref="AnnealSteps"/> for short runs.
/// </summary>
/// <param name="Decay">EMA decay of the VQ codebook (VQ-VAE: 0.99; 0.95 adapts faster in a run of a few thousand steps).</param>
/// <param name="DeadUsage">A code is dead when its EMA share of assignments falls below this fraction of the uniform share 1/Codes.</param>
/// <param name="RestartEvery">Steps between dead-code restarts.</param>
/// <param name="KlWeight">dVAE: final weight β of KL(q ‖ uniform), reached after <see cref="AnnealSteps"/>.</param>
public sealed record TokenizerConfig(
    TokenizerKind Kind = TokenizerKind.Vq, int ImageSize = 224, int Channels = 3, int PatchSize = 16, int Codes = 8192,
    int CodeDim = 32, int Hidden = 128,
    double Commitment = 0.25, double Decay = 0.95, double DeadUsage = 0.1, int RestartEvery = 10,
    double TemperatureStart = 1.0, double TemperatureEnd = 1.0 / 16, double KlWeight = 6.6, int AnnealSteps = 5000)
{
    /// <summary>Training recipe: AdamW as DALL-E's dVAE (lr 1e-3 at batch 64 here → base 4e-3 per 256), little decay.</summary>
    public OptimizerConfig Optimizer { get; init; } = new(BaseLearningRate: 4e-3, WeightDecay: 1e-4, Beta2: 0.99, WarmupFraction: 0.02);

    [JsonIgnore] public int GridSize => ImageSize / PatchSize;

    /// <summary>CPU scale: 28×28 images in 4×4 patches (a 7×7 grid, BEiT's tiny ViT), 256 codes, code width 16, 64 channels.</summary>
    public static TokenizerConfig Tiny(TokenizerKind kind = TokenizerKind.Vq, int imageSize = 28, int channels = 1) =>
        new(kind, imageSize, channels, PatchSize: 4, Codes: 256, CodeDim: 16, Hidden: 64, AnnealSteps: 1000);

    public TokenizerConfig ForInput(int imageSize, int channels) => this with { ImageSize = imageSize, Channels = channels };

    /// <summary>
    /// Its size before it is built (<see cref="Methods.MemoryBudget"/>): the encoder's and decoder's convolutions and the
    /// codebook; per image, the convolutions' feature maps and, per code position, a distance (or logit), a soft assignment
    /// and a one-hot row over every code. `--codes 10000000` would spend its first minute building a 40 GB table.
    /// </summary>
    public Methods.ModelSize Size()
    {
        // The encoder ends in a code vector (VQ) or a logit per code (dVAE); the decoder starts from a code's embedding.
        double grid = GridSize * (double)GridSize, pixels = (double)ImageSize * ImageSize, encoded = Kind == TokenizerKind.Vq ? CodeDim : Codes;
        double convolutions = 2 * (9.0 * Channels * Hidden + (double)Hidden * Hidden * PatchSize * PatchSize) + Hidden * ((double)encoded + CodeDim);
        return new(convolutions + Codes * (double)CodeDim, 4 * pixels * Hidden + 3 * grid * Codes + 2 * grid * Hidden);
    }

    /// <summary>Throws a one-line error naming the option and the expected range.</summary>
    public void Validate()
    {
        if (PatchSize < 1 || ImageSize < PatchSize || ImageSize % PatchSize != 0)
            throw new ResearchKitException($"tokenizer: image size {ImageSize} must be a positive multiple of the patch size {PatchSize}");
        if (Codes < 2) throw new ResearchKitException($"tokenizer: --codes must be at least 2; got {Codes}");
        if (CodeDim < 1 || Hidden < 1) throw new ResearchKitException($"tokenizer: code width and hidden channels must be positive; got {CodeDim} and {Hidden}");
        if (Decay is <= 0 or >= 1 || double.IsNaN(Decay)) throw new ResearchKitException($"tokenizer: EMA decay must be in (0, 1); got {Decay}");
        if (DeadUsage is < 0 or >= 1 || double.IsNaN(DeadUsage)) throw new ResearchKitException($"tokenizer: dead-code usage must be in [0, 1); got {DeadUsage}");
        if (RestartEvery < 1) throw new ResearchKitException($"tokenizer: restart interval must be at least 1 step; got {RestartEvery}");
        if (!(TemperatureStart > 0 && TemperatureEnd > 0 && TemperatureEnd <= TemperatureStart))
            throw new ResearchKitException($"tokenizer: temperatures must be positive and fall ({TemperatureStart} → {TemperatureEnd})");
        if (AnnealSteps < 1) throw new ResearchKitException($"tokenizer: anneal steps must be at least 1; got {AnnealSteps}");
        Optimizer.Validate("tokenizer");
    }

    /// <summary>A new, untrained tokenizer of this kind (seed with <see cref="Compute.Seed"/> first).</summary>
    public VisualTokenizer Build() => Kind == TokenizerKind.Vq ? new VqTokenizer(this) : new DiscreteVae(this);
}

/// <summary>One training forward pass.</summary>
/// <param name="Loss">The scalar the optimizer minimises.</param>
/// <param name="Reconstruction">[B, C, H, W], in the input's (normalised) space.</param>
/// <param name="Usage">[Codes]: the share of this batch's positions assigned to each code (sums to 1).</param>
public sealed record TokenizerOutput(Tensor Loss, Tensor Reconstruction, Tensor Usage);

/// <summary>
/// A visual tokenizer: images → a grid of discrete codes, one per patch, and back. The shared encoder and decoder are
/// small convolution stacks: a 3×3 convolution, then one convolution with kernel = stride = patch size (so each code
/// sees its own patch and a one-pixel border), and a 1×1 projection; the decoder mirrors it with a transposed
/// convolution. Subclasses supply the discrete bottleneck. Input images are normalised as the tokenizer's training
/// data was (<see cref="TokenizerRun"/> stores that normalisation).
/// </summary>
public abstract class VisualTokenizer : Module<Tensor, Generator?, TokenizerOutput>, ITrainable
{
    public TokenizerConfig Config { get; }
    protected readonly Sequential encoder, decoder;

    protected VisualTokenizer(TokenizerConfig config, int encoderOutputs, string name) : base(name)
    {
        config.Validate();
        Config = config;
        int h = config.Hidden, p = config.PatchSize;
        encoder = Sequential(Conv2d(config.Channels, h, 3, padding: 1), ReLU(), Conv2d(h, h, p, stride: p), ReLU(), Conv2d(h, encoderOutputs, 1));
        decoder = Sequential(Conv2d(config.CodeDim, h, 1), ReLU(), ConvTranspose2d(h, h, p, stride: p), ReLU(), Conv2d(h, config.Channels, 3, padding: 1));
    }

    public nn.Module Module => this;

    public IReadOnlyList<UpdatePhase> Phases() =>
        [new UpdatePhase("loss", (batch, generator) => call(batch.Images, generator).Loss, UpdatePhase.TrainableOf(this))];

    /// <summary>Token grid [B, h, w] (int64, codes 0 … Codes − 1) of images [B, C, H, W]: deterministic, no gradient.</summary>
    public abstract Tensor Encode(Tensor images);

    /// <summary>Images [B, C, H, W] (normalised space) decoded from a token grid [B, h, w].</summary>
    public Tensor Decode(Tensor codes)
    {
        if (codes.dim() != 3 || codes.shape[1] != Config.GridSize || codes.shape[2] != Config.GridSize)
            throw new ArgumentException($"token grid must be [B, {Config.GridSize}, {Config.GridSize}]; got [{string.Join(", ", codes.shape)}]", nameof(codes));
        using var scope = NewDisposeScope();
        var z = CodeVectors(codes.reshape(-1)).reshape(codes.shape[0], codes.shape[1], codes.shape[2], Config.CodeDim).permute(0, 3, 1, 2);
        return Mixed.Stack(decoder, z).MoveToOuterDisposeScope();
    }

    /// <summary>Embedding vectors [N, CodeDim] of codes [N].</summary>
    protected abstract Tensor CodeVectors(Tensor codes);

    /// <summary>[B, C, H, W] → encoder outputs [B, E, h, w], checking the image shape against the configuration first.</summary>
    protected Tensor RunEncoder(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != Config.Channels || images.shape[2] != Config.ImageSize || images.shape[3] != Config.ImageSize)
            throw new ArgumentException($"the tokenizer takes images [B, {Config.Channels}, {Config.ImageSize}, {Config.ImageSize}]; got [{string.Join(", ", images.shape)}]", nameof(images));
        return encoder.call(images);
    }

    /// <summary>
    /// The share of positions assigned to each code, [K] float32, from codes [N]. Counted with index_add_ of ones (whole
    /// numbers, so exact and deterministic even with CUDA's atomic adds) rather than bincount, which waits for the device
    /// to size its output.
    /// </summary>
    protected static Tensor Usage(Tensor codes, int K) =>
        zeros(K, dtype: ScalarType.Float32, device: codes.device).index_add_(0, codes, ones_like(codes, dtype: ScalarType.Float32), 1) / codes.shape[0];

    /// <summary>exp(entropy) of a usage distribution [Codes]: the effective number of codes in use (Codes when uniform).</summary>
    public static double Perplexity(Tensor usage)
    {
        using var _ = no_grad();
        var p = usage / usage.sum();
        return Math.Exp(-(p * (p + 1e-12).log()).sum().item<float>());
    }
}
