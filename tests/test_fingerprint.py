"""One fingerprint policy for CLIP weights: every value counts, dtype counts, and a changed
tensor is hashed again (the embedding disk cache, feature caches and resume checks rely on it)."""
import pytest
import torch

from pomp_mm.clip import build_clip, sampled_fingerprint, weights_fingerprint
from pomp_mm.pretrain.feature_cache import visual_fingerprint


def _off_grid_edit(clip):
    """Change one token-embedding value between the points the old sampled hash read."""
    weight = clip.token_embedding.weight
    step = weight.numel() // 65536
    assert step > 1  # else every value is on the grid and the test below proves nothing
    with torch.no_grad():
        weight.view(-1)[1] += 0.5


def test_a_few_changed_values_miss_the_disk_cache(make_encoder, tmp_path):
    """A CLIP file overwritten with a fine-tuned one that differs in a few token-embedding
    values must not get the old file's class embeddings from the disk cache."""
    names = ['cat', 'dog', 'sea lion']
    with torch.no_grad():
        make_encoder(seed=0, templates='single', cache_dir=str(tmp_path)).encode_text(names)
        edited = make_encoder(seed=0, templates='single', cache_dir=str(tmp_path))
        tower = edited.tower
        before = tower.fingerprint()
        sampled_before = sampled_fingerprint(tower, tower.transformer)
        _off_grid_edit(tower)
        # the old sampled hash did not see the edit
        assert sampled_fingerprint(tower, tower.transformer) == sampled_before
        assert tower.fingerprint() != before
        fresh = make_encoder(seed=0, templates='single')
        fresh.tower.load_state_dict(tower.state_dict())
        torch.testing.assert_close(edited.encode_text(names), fresh.encode_text(names),
                                   atol=1e-6, rtol=0)


def test_dtype_and_device_changes_are_seen_and_unchanged_weights_keep_their_hash():
    clip = build_clip('tiny')
    first = weights_fingerprint(clip.visual)
    assert weights_fingerprint(clip.visual) == first == visual_fingerprint(clip.visual)
    twin = build_clip('tiny')
    twin.load_state_dict(clip.state_dict())
    assert weights_fingerprint(twin.visual) == first  # content, not object identity
    clip.visual.half()
    halved = weights_fingerprint(clip.visual)
    assert halved != first
    clip.visual.float()  # fp16 round trip loses bits: another hash, yet stable when asked again
    assert weights_fingerprint(clip.visual) == weights_fingerprint(clip.visual)


def test_fp16_weights_and_their_float32_round_trip_hash_differently():
    """Same values, other dtype: fp16 weights and their exact float32 copies (``half()`` then
    ``float()``) compute differently (fp16 matmuls round), so a cache keyed on the hash must
    not hand one the other's embeddings."""
    import copy
    halved = copy.deepcopy(build_clip('tiny').visual).half()
    widened = copy.deepcopy(halved).float()
    for (name, a), b in zip(halved.state_dict().items(), widened.state_dict().values()):
        assert torch.equal(a.float(), b), name  # the same values
    assert weights_fingerprint(halved) != weights_fingerprint(widened)


def test_resume_accepts_the_older_sampled_fingerprint_of_the_same_clip():
    """Checkpoints written before every weight was hashed carry the sampled fingerprint: the
    same CLIP resumes, another is refused."""
    from pomp_mm.pretrain import PompPretrainer
    torch.manual_seed(0)
    model = PompPretrainer(clip_model='tiny', vocabulary=['cat', 'dog', 'cow'], n_ctx=4,
                           num_sampled=2)
    tower = model.text_encoder.tower
    old = sampled_fingerprint(model.visual) + sampled_fingerprint(tower, tower.transformer)
    assert len(old) == 32 and len(model.clip_fingerprint()) == 48
    state = model.state_dict()
    state[model.FINGERPRINT_KEY] = torch.frombuffer(bytearray(old.encode()), dtype=torch.uint8)
    model.load_state_dict(state)
    torch.manual_seed(1)
    other = PompPretrainer(clip_model='tiny', vocabulary=['cat', 'dog', 'cow'], n_ctx=4,
                           num_sampled=2)
    with pytest.raises(ValueError, match=f'other CLIP weights \\(fingerprint {old}\\)'):
        other.load_state_dict(state)
