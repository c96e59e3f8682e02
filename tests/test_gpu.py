"""Checks that need a CUDA GPU (skipped without one; run on a GPU by tools/gpu_check.sh).

The CPU suite covers the same code paths in float32; these add what only a GPU shows: the
packed shared-prefix text path under CUDA kernels, flash's varlen kernel (attention='varlen' in
bf16) against the float32 CPU path, a step that never synchronises with the host, the compiled
step, and a bf16-autocast pre-training step against the float32 CPU step.
"""
import copy
import math

import pytest
import torch

from helpers import assert_same_embeddings_and_grads

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

# a text tower with ViT-B's width and heads (layers cut to keep the test short)
GPU_CLIP = dict(embed_dim=512,
                vision_cfg=dict(image_size=64, layers=2, width=128, patch_size=16),
                text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=4))


def _names(count: int):
    from pomp_mm.vocabulary import load_vocabulary
    vocab = load_vocabulary('imagenet21k')
    gen = torch.Generator().manual_seed(0)
    return [vocab.names[i] for i in torch.randperm(len(vocab), generator=gen)[:count].tolist()]


def _encoder(share_prefix: bool):
    from pomp_mm import PompTextEncoder
    torch.manual_seed(0)
    return PompTextEncoder(clip_model=copy.deepcopy(GPU_CLIP), vocabulary=['cat'], n_ctx=16,
                           cat_bg=False, prompt_trainable=True, share_prefix=share_prefix).cuda()


def test_packed_shared_prefix_matches_whole_prompts_on_cuda():
    names = _names(300)
    packed, whole = _encoder(True), _encoder(False)
    whole.load_state_dict(packed.state_dict())
    assert_same_embeddings_and_grads(packed, whole, names, atol=1e-4, grad_rtol=1e-3)


def test_bf16_pretrain_step_on_cuda_matches_fp32_cpu():
    from pomp_mm.pretrain.model import PompPretrainer

    def step(device, autocast):
        torch.manual_seed(0)
        model = PompPretrainer(clip_model='tiny', pretrained=None,
                               vocabulary=_names(2000), n_ctx=4, num_sampled=256, seed=5)
        model.to(device).train()
        gen = torch.Generator().manual_seed(1)
        feats = torch.nn.functional.normalize(torch.randn(8 * 2, 32, generator=gen), dim=-1)
        labels = torch.randint(2000, (8,), generator=gen)
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=autocast):
            out = model.compute_loss(feats.to(device), labels.to(device), 2)
        out['loss'].backward()
        return (float(out['loss']), model.last_class_ids.clone(),
                model.prompt_learner.ctx.grad.float().cpu())

    loss_cpu, ids_cpu, grad_cpu = step('cpu', False)
    loss_gpu, ids_gpu, grad_gpu = step('cuda', True)
    assert torch.equal(ids_cpu, ids_gpu)  # sampling is on the CPU generator, device-independent
    assert abs(loss_gpu - loss_cpu) <= 2e-2 * abs(loss_cpu), (loss_gpu, loss_cpu)
    cos = torch.nn.functional.cosine_similarity(grad_cpu.flatten(), grad_gpu.flatten(), dim=0)
    assert cos > 0.95, float(cos)


def test_official_step_built_on_cuda_matches_per_image_contrast():
    """The official step built from a tower already on the GPU (as the benchmark builds it)
    gives pomp_mm's per-image loss for the same draw."""
    from pomp_mm.pretrain.model import PompPretrainer
    from pomp_mm.pretrain.official import OfficialPromptStep
    vocab = _names(300)
    torch.manual_seed(0)
    ours = PompPretrainer(clip_model='tiny', pretrained=None, vocabulary=vocab,
                          n_ctx=4, num_sampled=64, contrast='per_image', correction='log10',
                          mask_duplicate_names=False).cuda().train()
    official = OfficialPromptStep(ours.text_encoder.tower, vocab, 4, 64,
                                  ours.text_encoder.tokenizer).cuda()
    assert official.tokens.is_cuda
    with torch.no_grad():
        official.ctx.copy_(ours.prompt_learner.ctx)
    gen = torch.Generator().manual_seed(3)
    feats = torch.nn.functional.normalize(torch.randn(8, 32, generator=gen), dim=-1).cuda()
    labels = torch.randint(300, (4,), generator=gen).cuda()
    mine = ours.compute_loss(feats, labels, 2)['loss']
    theirs = official(feats, labels.repeat_interleave(2), ours.last_negatives)
    assert mine.item() == pytest.approx(theirs.item(), abs=1e-4)


def _varlen_calls(monkeypatch):
    """Counts calls of flash's varlen kernel (what attention='varlen' runs in half precision)."""
    import torch.nn.attention.varlen as varlen
    calls = []
    real = varlen.varlen_attn

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)

    monkeypatch.setattr(varlen, 'varlen_attn', spy)
    return calls


@pytest.mark.parametrize('share_prefix', [True, False])
def test_varlen_kernel_in_bf16_matches_the_fp32_cpu_path(monkeypatch, share_prefix):
    from pomp_mm import PompTextEncoder
    names = _names(300)
    encs = []
    for mode in ('grouped', 'varlen'):
        torch.manual_seed(0)
        encs.append(PompTextEncoder(clip_model=copy.deepcopy(GPU_CLIP), vocabulary=names,
                                    n_ctx=16, cat_bg=False, prompt_trainable=True,
                                    attention=mode, share_prefix=share_prefix))
    cpu, gpu = encs[0], encs[1].cuda()
    gpu.load_state_dict(cpu.state_dict())
    calls = _varlen_calls(monkeypatch)
    weights = torch.randn(len(names), 512, generator=torch.Generator().manual_seed(0))
    ref = cpu.encode_names(names)
    (ref * weights).sum().backward()
    with torch.autocast('cuda', dtype=torch.bfloat16):
        got = gpu.encode_names(names)
    (got * weights.cuda()).sum().backward()
    assert calls and set(calls) == {torch.bfloat16}, calls  # 4 layers, one call each
    cos = torch.nn.functional.cosine_similarity(got.float().cpu(), ref.detach(), dim=-1)
    assert cos.min() > 0.99, float(cos.min())
    g_cpu, g_gpu = cpu.prompt_learner.ctx.grad, gpu.prompt_learner.ctx.grad.float().cpu()
    gcos = torch.nn.functional.cosine_similarity(g_cpu.flatten(), g_gpu.flatten(), dim=0)
    assert gcos > 0.98, float(gcos)


def test_varlen_fp32_on_cuda_equals_grouped():
    """In float32 (no flash kernel) 'varlen' runs one masked SDPA call per layer on the GPU:
    exact against 'grouped'."""
    from pomp_mm import PompTextEncoder
    names = _names(300)
    encs = []
    for mode in ('grouped', 'varlen'):
        torch.manual_seed(0)
        encs.append(PompTextEncoder(clip_model=copy.deepcopy(GPU_CLIP), vocabulary=['cat'],
                                    n_ctx=16, cat_bg=False, prompt_trainable=True,
                                    attention=mode).cuda())
    encs[1].load_state_dict(encs[0].state_dict())
    assert_same_embeddings_and_grads(encs[1], encs[0], names, atol=1e-4, grad_rtol=1e-3)


def _gpu_pretrainer(contrast, compile=False):
    from pomp_mm.pretrain.model import PompPretrainer
    torch.manual_seed(0)
    return PompPretrainer(clip_model=copy.deepcopy(GPU_CLIP), pretrained=None,
                          vocabulary=_names(3000), n_ctx=16, num_sampled=1000, seed=5,
                          contrast=contrast, attention='varlen', compile=compile).cuda().train()


def _gpu_steps(model, steps, sync_mode=None):
    """``steps`` bf16 text steps (loss, backward, SGD) on fixed features, labels on the host
    as a dataloader gives them; returns the losses (read after the steps)."""
    gen = torch.Generator().manual_seed(1)
    feats = torch.nn.functional.normalize(torch.randn(32 * 4, 512, generator=gen), dim=-1)
    feats = feats.cuda()
    labels = [torch.randint(3000, (32,), generator=gen) for _ in range(steps)]
    optim = torch.optim.SGD([model.prompt_learner.ctx], lr=0.002, momentum=0.9,
                            weight_decay=5e-4)
    losses, grads = [], []
    if sync_mode is not None:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode(sync_mode)
    try:
        for i in range(steps):
            with torch.autocast('cuda', dtype=torch.bfloat16):
                loss = model.compute_loss(feats, labels[i], 4)['loss']
            loss.backward()
            grads.append(model.prompt_learner.ctx.grad.detach().clone())
            optim.step()
            optim.zero_grad(set_to_none=True)
            losses.append(loss.detach())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return [float(v) for v in losses], grads


@pytest.mark.parametrize('contrast', ['shared', 'per_image'])
def test_varlen_step_makes_no_host_sync_after_warmup(contrast):
    """After two warm-up steps (token table built, kernels chosen), a pre-training step with
    attention='varlen' never waits for the GPU: torch raises on any synchronising call."""
    model = _gpu_pretrainer(contrast)
    _gpu_steps(model, 2)
    losses, _ = _gpu_steps(model, 3, sync_mode='error')
    assert all(math.isfinite(v) for v in losses), losses


def test_compiled_varlen_step_on_cuda_matches_eager():
    eager, compiled = _gpu_pretrainer('per_image'), _gpu_pretrainer('per_image', compile=True)
    (la, ga), (lb, gb) = _gpu_steps(eager, 3), _gpu_steps(compiled, 3)
    for a, b in zip(la, lb):
        assert b == pytest.approx(a, rel=1e-2)
    for a, b in zip(ga, gb):
        cos = torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(),
                                                    dim=0)
        assert cos > 0.99, float(cos)
