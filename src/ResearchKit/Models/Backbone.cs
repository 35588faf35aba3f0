using ResearchKit.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>
/// The contract every feature extractor meets, whatever its architecture (timm's split:
/// forward_features → pool → forward_head, plus per-block intermediates). Evaluation — probes per layer,
/// kNN, full and partial fine-tuning — works on this type only, so a method's backbone needs no code there.
/// Input is always images [B, C, H, W] (normalised); a backbone that works on tokens (iGPT) tokenises inside.
/// </summary>
public abstract class Backbone : Module<Tensor, Tensor>
{
    protected Backbone(string name) : base(name) { }

    /// <summary>Number of blocks; per-layer features are indexed 0 … Depth − 1.</summary>
    public abstract int Depth { get; }

    /// <summary>Width of the pooled feature vector that <see cref="Features"/> returns (a classifier head's input).</summary>
    public abstract int FeatureDim { get; }

    /// <summary>images → pooled final features [B, FeatureDim] (forward_features + pool).</summary>
    public abstract Tensor Features(Tensor images);

    /// <summary>images → one pooled feature vector [B, D_l] per block, all from a single forward pass (for probes).</summary>
    public abstract Tensor[] LayerFeatures(Tensor images);

    /// <summary>
    /// Partial fine-tuning (MAE §4.3, Fig. 9): only the last <paramref name="trainableBlocks"/> blocks (and what
    /// follows them, such as a final norm) stay trainable; trainableBlocks ≥ Depth makes everything trainable.
    /// </summary>
    public abstract void FreezeAllBut(int trainableBlocks);

    /// <summary>
    /// <see cref="FreezeAllBut(int)"/> for a stack of blocks: everything frozen but the last <paramref name="trainableBlocks"/>
    /// blocks and, when any block trains, <paramref name="after"/> (what follows the blocks: a final norm, a head).
    /// </summary>
    protected void FreezeAllBut(int trainableBlocks, IEnumerable<nn.Module> stack, IEnumerable<Parameter> after)
    {
        var blocks = stack.ToList();
        foreach (var p in parameters()) p.requires_grad = trainableBlocks >= blocks.Count;
        if (trainableBlocks >= blocks.Count) return;
        for (int i = Math.Max(0, blocks.Count - trainableBlocks); i < blocks.Count; i++)
            foreach (var p in blocks[i].parameters()) p.requires_grad = true;
        foreach (var p in after) p.requires_grad = trainableBlocks > 0;
    }

    /// <summary>The frozen blocks of <see cref="FreezeBlocksBut"/>: kept in eval mode whatever mode the backbone is put in. A plain
    /// array, not a module field TorchSharp registers, so the state dictionary keeps its names.</summary>
    nn.Module[] frozenInEval = [];

    /// <summary>
    /// <see cref="FreezeAllBut(int)"/> for a stack of blocks with running state (BatchNorm statistics, spectral-norm estimates):
    /// only the last <paramref name="trainableBlocks"/> blocks train, and the frozen ones also stay in eval mode while the
    /// model trains, so frozen features do not drift.
    /// </summary>
    protected void FreezeBlocksBut(int trainableBlocks, IEnumerable<nn.Module> stack)
    {
        var blocks = stack.ToList();
        int frozen = Math.Clamp(blocks.Count - trainableBlocks, 0, blocks.Count);
        for (int i = 0; i < blocks.Count; i++)
            foreach (var p in blocks[i].parameters()) p.requires_grad = i >= frozen;
        frozenInEval = blocks.Take(frozen).ToArray();
        train(training);
    }

    public override void train(bool on = true)
    {
        base.train(on);
        foreach (var block in frozenInEval) block.eval();
    }

    /// <summary>
    /// Parameter names (relative to this backbone) that fine-tuning exempts from weight decay besides 1-D
    /// parameters — timm's no_weight_decay(), e.g. the ViT's [CLS] token.
    /// </summary>
    public virtual IReadOnlyCollection<string> NoWeightDecay => [];

    public override Tensor forward(Tensor images) => Features(images);
}

/// <summary>
/// A backbone that sees its images through a fixed transform: the colour methods' networks take the L channel (or ab) of
/// Lab, computed from the normalised RGB images every backbone receives, so probes and fine-tuning need no special case.
/// The transform has no parameters; everything else is the inner backbone's.
/// </summary>
public sealed class PreprocessedBackbone : Backbone
{
    readonly Backbone inner;
    readonly Func<Tensor, Tensor> preprocess;

    /// <param name="preprocess">normalised images [B, C, H, W] → the inner backbone's input.</param>
    public PreprocessedBackbone(Backbone inner, Func<Tensor, Tensor> preprocess) : base(nameof(PreprocessedBackbone))
    {
        this.inner = inner;
        this.preprocess = preprocess;
        RegisterComponents();
    }

    public Backbone Inner => inner;
    public override int Depth => inner.Depth;
    public override int FeatureDim => inner.FeatureDim;
    public override Tensor Features(Tensor images) => inner.Features(preprocess(images));
    public override Tensor[] LayerFeatures(Tensor images) => inner.LayerFeatures(preprocess(images));
    public override void FreezeAllBut(int trainableBlocks) => inner.FreezeAllBut(trainableBlocks);
    public override IReadOnlyCollection<string> NoWeightDecay => inner.NoWeightDecay.Select(n => "inner." + n).ToList();
}

/// <summary>
/// A backbone with a linear head on its pooled features: the fine-tuning model for any backbone. The head is
/// preceded by BatchNorm without affine parameters, MAE's linear-probing head (Appendix A.2), so backbones whose
/// features differ in scale (a ViT's normed tokens, a CNN's averaged ReLU maps) train with the same recipe;
/// MAE's ViT fine-tuning normalises the pooled feature too (its fc_norm).
/// </summary>
public sealed class Classifier : Module<Tensor, Tensor>
{
    public Backbone Backbone => backbone;
    readonly Backbone backbone;
    readonly BatchNorm1d norm;
    readonly Linear head;

    public Classifier(Backbone backbone, int classes) : base(nameof(Classifier))
    {
        this.backbone = backbone;
        norm = BatchNorm1d(backbone.FeatureDim, affine: false);
        head = Linear(backbone.FeatureDim, classes);
        RegisterComponents();
        using var _ = no_grad();
        // MAE's fine-tuning recipe (main_finetune.py) starts the new head near zero: trunc-normal, std 2e-5.
        init.trunc_normal_(head.weight, std: 2e-5);
        init.zeros_(head.bias!);
    }

    public override Tensor forward(Tensor images) => Logits(backbone.Features(images));

    /// <summary>The head's logits for pooled features [B, FeatureDim]: for a fine-tuning objective that computes the
    /// features itself, beside another loss from the same pass (<see cref="Evaluation.FineTuneLoss"/>).</summary>
    public Tensor Logits(Tensor features) => Mixed.Head(head, norm.call(features));
}
