using ResearchKit.Layers;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Tokenizers;

/// <summary>
/// Discrete VAE as DALL-E trained the tokenizer BEiT uses (Ramesh et al., 2021, §2.1): the encoder gives logits over
/// the K codes at each patch; training samples a relaxed one-hot with the Gumbel-softmax at temperature τ (annealed
/// from <see cref="TokenizerConfig.TemperatureStart"/> to <see cref="TokenizerConfig.TemperatureEnd"/>), mixes the code
/// embeddings with it, and decodes. The loss is reconstruction plus β·KL(q ‖ uniform prior), β raised linearly to
/// <see cref="TokenizerConfig.KlWeight"/> over the same steps (DALL-E warms β up from 0; the KL term also keeps codes in
/// use). Tokens are the arg-max codes, as BEiT takes them.
/// </summary>
public sealed class DiscreteVae : VisualTokenizer, IWeightsLoaded
{
    readonly Parameter embedding;   // K, D: code vectors the decoder sees
    readonly Tensor steps;          // 1 (int64): training steps taken, for the annealing schedules

    public DiscreteVae(TokenizerConfig config) : base(config, config.Codes, nameof(DiscreteVae))
    {
        embedding = Parameter(randn(config.Codes, config.CodeDim));
        steps = zeros(1, dtype: ScalarType.Int64);
        RegisterComponents();
    }

    /// <summary>Progress through the annealing, 0 … 1, after <paramref name="step"/> steps.</summary>
    double Anneal(long step) => Math.Min(1.0, (double)step / Config.AnnealSteps);

    /// <summary>Gumbel-softmax temperature after <paramref name="step"/> steps: exponential from start to end (DALL-E anneals τ geometrically).</summary>
    public double Temperature(long step) => Config.TemperatureStart * Math.Pow(Config.TemperatureEnd / Config.TemperatureStart, Anneal(step));

    /// <summary>KL weight β after <paramref name="step"/> steps: linear from 0.</summary>
    public double KlWeightAt(long step) => Config.KlWeight * Anneal(step);

    /// <summary>Training steps taken so far (saved with the weights, so a resumed run continues the schedules).</summary>
    public long Steps => stepsTaken ??= steps.item<long>();

    long? stepsTaken;   // the steps buffer, mirrored on the host so that a step reads nothing back from the device

    public void OnWeightsLoaded() => stepsTaken = null;

    /// <summary>Encoder logits [B, K, h, w].</summary>
    public Tensor Logits(Tensor images) => RunEncoder(images);

    public override Tensor Encode(Tensor images)
    {
        using var _ = no_grad();
        return Logits(images).argmax(1);
    }

    protected override Tensor CodeVectors(Tensor codes) => embedding.index_select(0, codes);

    public override TokenizerOutput forward(Tensor images, Generator? generator)
    {
        long step = Steps;
        var logits = Logits(images);                                                   // B, K, h, w
        Tensor soft;
        if (training)
        {
            // Gumbel(0, 1) noise from the step's generator: −log(−log U); U kept away from 0 and 1.
            var u = Draws.Uniform(generator, logits.shape, logits.device).clamp(1e-6, 1 - 1e-6);
            soft = ((logits - (-u.log()).log()) / Temperature(step)).softmax(1);
            using (no_grad()) steps.add_(1);
            stepsTaken = step + 1;
        }
        else soft = functional.one_hot(logits.argmax(1), Config.Codes).permute(0, 3, 1, 2).to_type(logits.dtype);
        var z = einsum("bkhw,kd->bdhw", soft, embedding);
        var reconstruction = Mixed.Stack(decoder, z);
        var logQ = logits.log_softmax(1);
        // KL(q ‖ uniform) per position = Σ q log q + log K, averaged over positions.
        var kl = (logQ.exp() * logQ).sum(1).mean() + Math.Log(Config.Codes);
        var loss = functional.mse_loss(reconstruction, images) + KlWeightAt(step) * kl / (Config.PatchSize * Config.PatchSize * Config.Channels);
        return new TokenizerOutput(loss, reconstruction, Usage(logits.argmax(1).reshape(-1), Config.Codes));
    }
}
