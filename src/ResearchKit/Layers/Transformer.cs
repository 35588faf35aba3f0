using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Layers;

/// <summary>Multi-head self-attention over [B, T, D] with one fused qkv projection (bfloat16 products under <see cref="Precision.Bf16"/>: <see cref="Mixed"/>).</summary>
public sealed class SelfAttention : Module<Tensor, Tensor>
{
    readonly Linear qkv;
    readonly Linear proj;
    readonly int heads;
    readonly bool causal;

    public SelfAttention(int dim, int heads, bool causal = false) : base(nameof(SelfAttention))
    {
        if (dim % heads != 0) throw new ArgumentException($"dimension {dim} is not divisible by {heads} heads", nameof(heads));
        qkv = Linear(dim, 3 * dim);
        proj = Linear(dim, dim);
        this.heads = heads;
        this.causal = causal;
        RegisterComponents();
    }

    /// <summary>x [B, T, D] → queries, keys, values, each [B, H, T, D/H].</summary>
    (Tensor Q, Tensor K, Tensor V) SplitHeads(Tensor x)
    {
        var (B, T, D) = (x.shape[0], x.shape[1], x.shape[2]);
        var qkvHeads = Mixed.Linear(qkv, x).reshape(B, T, 3, heads, D / heads).permute(2, 0, 3, 1, 4);   // 3, B, H, T, Dh
        return (qkvHeads[0], qkvHeads[1], qkvHeads[2]);
    }

    public override Tensor forward(Tensor x)
    {
        var (q, k, v) = SplitHeads(x);
        var attended = Mixed.Attention(q, k, v, causal: causal);                               // B, H, T, Dh
        return Mixed.Linear(proj, attended.transpose(1, 2).reshape(x.shape));
    }

    /// <summary>
    /// Attention for the next <c>x.shape[1]</c> positions of a sequence whose earlier keys and values are in <paramref name="cache"/>
    /// (causal: position i sees every cached position and the new ones up to itself); the new keys and values are added
    /// to the cache. Sampling then costs one token's forward per step instead of the whole prefix's.
    /// </summary>
    public Tensor ForwardCached(Tensor x, KeyValueCache cache)
    {
        var (q, k, v) = SplitHeads(x);
        long past = cache.Length, count = x.shape[1];
        var (keys, values) = cache.Append(k, v);
        Tensor attended;
        if (count == 1) attended = Mixed.Attention(q, keys, values);                          // the newest position sees everything
        else
        {
            // True = may attend: new position i sees positions 0 … past + i.
            var allowed = ones(count, past + count, dtype: ScalarType.Bool, device: x.device).tril(past);
            attended = Mixed.Attention(q, keys, values, allowed);
        }
        return Mixed.Linear(proj, attended.transpose(1, 2).reshape(x.shape));
    }

    /// <summary>Attention probabilities [B, H, T, T], for attention-map figures.</summary>
    public Tensor Weights(Tensor x)
    {
        var (q, k, _) = SplitHeads(x);
        (q, k) = (q.to_type(ScalarType.Float32), k.to_type(ScalarType.Float32));   // probabilities for figures: float32 at any precision
        var scores = q.matmul(k.transpose(-2, -1)) / Math.Sqrt(q.shape[^1]);
        long T = x.shape[1];
        if (causal) scores = scores.masked_fill(ones(T, T, dtype: ScalarType.Bool, device: x.device).triu(1), double.NegativeInfinity);
        return scores.softmax(-1);
    }
}

/// <summary>
/// One attention layer's keys and values of the positions seen so far, [B, H, T, D/H] each, in buffers allocated once
/// for <see cref="Capacity"/> positions (no re-allocation per generated token). Owned by the caller, who disposes it.
/// </summary>
public sealed class KeyValueCache(long capacity) : IDisposable
{
    Tensor? keys, values;
    public long Capacity { get; } = capacity;
    public long Length { get; private set; }

    /// <summary>Adds keys and values [B, H, t, Dh]; returns views of every cached position, [B, H, Length, Dh].</summary>
    public (Tensor Keys, Tensor Values) Append(Tensor k, Tensor v)
    {
        if (Length + k.shape[2] > Capacity) throw new InvalidOperationException($"the key/value cache holds {Capacity} positions; {Length + k.shape[2]} were added");
        if (keys is null)
        {
            keys = zeros(k.shape[0], k.shape[1], Capacity, k.shape[3], dtype: k.dtype, device: k.device).DetachFromDisposeScope();
            values = zeros(v.shape[0], v.shape[1], Capacity, v.shape[3], dtype: v.dtype, device: v.device).DetachFromDisposeScope();
        }
        keys.narrow(2, Length, k.shape[2]).copy_(k);
        values!.narrow(2, Length, v.shape[2]).copy_(v);
        Length += k.shape[2];
        return (keys.narrow(2, 0, Length), values.narrow(2, 0, Length));
    }

    public void Dispose()
    {
        keys?.Dispose();
        values?.Dispose();
    }
}

/// <summary>Position-wise feed-forward: Linear → GELU → Linear.</summary>
public sealed class FeedForward : Module<Tensor, Tensor>
{
    readonly Linear fc1;
    readonly GELU act;
    readonly Linear fc2;

    public FeedForward(int dim, int hidden) : base(nameof(FeedForward))
    {
        fc1 = Linear(dim, hidden);
        act = GELU();
        fc2 = Linear(hidden, dim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Mixed.Linear(fc2, act.call(Mixed.Linear(fc1, x)));
}

/// <summary>Pre-norm transformer block (ViT §3.1): x + Attn(LN(x)), then x + MLP(LN(x)).</summary>
public sealed class TransformerBlock : Module<Tensor, Tensor>
{
    /// <summary>
    /// Runs <paramref name="blocks"/> in order on <paramref name="x"/> [B, T, D] and returns each block's output pooled by
    /// <paramref name="pool"/>: the per-layer features probes read. Each block's intermediates (attention maps, MLP
    /// activations) and the previous block's tokens are freed as soon as the block is done, not when the caller's scope
    /// ends: held for every layer of a batch they took iGPT's feature pass to 9.8 GB (issue 22, item 13).
    /// </summary>
    public static Tensor[] PooledOutputs(IList<TransformerBlock> blocks, Tensor x, Func<Tensor, Tensor> pool)
    {
        var pooled = new Tensor[blocks.Count];
        for (int i = 0; i < blocks.Count; i++)
        {
            using var scope = NewDisposeScope();
            var next = blocks[i].call(x);
            pooled[i] = pool(next).MoveToOuterDisposeScope();
            if (i > 0) x.Dispose();   // the previous block's tokens; the caller's input stays the caller's
            x = next.MoveToOuterDisposeScope();
        }
        if (blocks.Count > 0) x.Dispose();
        return pooled;
    }

    readonly LayerNorm norm1;
    readonly SelfAttention attn;
    readonly LayerNorm norm2;
    readonly FeedForward mlp;

    public TransformerBlock(int dim, int heads, double mlpRatio = 4.0, bool causal = false) : base(nameof(TransformerBlock))
    {
        norm1 = LayerNorm(dim, eps: 1e-6);
        attn = new SelfAttention(dim, heads, causal);
        norm2 = LayerNorm(dim, eps: 1e-6);
        mlp = new FeedForward(dim, (int)(dim * mlpRatio));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        x = x + attn.call(norm1.call(x));
        return x + mlp.call(norm2.call(x));
    }

    /// <summary>The block on the next positions of a sequence, with earlier positions' keys and values in <paramref name="cache"/> (causal).</summary>
    public Tensor ForwardCached(Tensor x, KeyValueCache cache)
    {
        x = x + attn.ForwardCached(norm1.call(x), cache);
        return x + mlp.call(norm2.call(x));
    }

    /// <summary>
    /// Forward FLOPs of one block on <paramref name="tokens"/> tokens (a multiply-add counts 2; norms, softmax and GELU
    /// are left out, as FLOP counts in the MAE and ViT papers do): qkv and output projections 2·T·4D², the MLP
    /// 2·T·2·r·D², and the attention products QKᵀ and AV 2·2·T²·D.
    /// </summary>
    public static double Flops(long tokens, int dim, double mlpRatio = 4.0)
    {
        double t = tokens, d = dim;
        return 2 * t * 4 * d * d + 2 * t * 2 * (int)(dim * mlpRatio) * d + 4 * t * t * d;
    }

    /// <summary>This block's attention probabilities for input x: [B, H, T, T].</summary>
    public Tensor AttentionWeights(Tensor x) => attn.Weights(norm1.call(x));
}

/// <summary>Weight initialisation shared by the transformer models (MAE's reference recipe).</summary>
public static class TransformerInit
{
    /// <summary>Xavier-uniform linear weights, zero biases, unit LayerNorms.</summary>
    public static void Apply(Module root)
    {
        using var _ = no_grad();
        foreach (var (_, module) in root.named_modules())
        {
            switch (module)
            {
                case Linear linear:
                    init.xavier_uniform_(linear.weight);
                    if (linear.bias is not null) init.zeros_(linear.bias);
                    break;
                case LayerNorm norm:
                    if (norm.weight is not null) init.ones_(norm.weight);
                    if (norm.bias is not null) init.zeros_(norm.bias);
                    break;
            }
        }
    }
}
