"""Checks that need a CUDA GPU (skipped without one; run on a GPU by tools/gpu_check.sh).

The CPU suite covers the same code paths in float32; these add what only a GPU shows: the
packed shared-prefix text path under CUDA kernels, and a bf16-autocast pre-training step
against the float32 CPU step.
"""
import copy

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
