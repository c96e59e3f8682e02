"""tools/synthetic/claims.py: the tables from recorded runs (no training here)."""
import json

import pytest

from helpers import load_tool
from pomp_mm.synthetic.world_clip import read_card


def _load():
    return load_tool('synthetic/claims')


def test_report_means_spreads_and_ratios(tmp_path):
    claims = _load()
    args = claims.parse_args(['--work-dir', str(tmp_path), '--seeds', '0', '1'])
    runs, evals = {}, {}
    for seed in (0, 1):
        evals[f'seed{seed}'] = {
            'hand': {'mean': 40.0, 'domain_mean': 10.0, 'domain-photo': 30.0},
            'pomp': {'mean': 50.0 + 2 * seed, 'domain_mean': 12.0, 'domain-photo': 35.0},
            'full-2000': {'mean': 45.0, 'domain_mean': 11.0},
            'sampled-2000': {'mean': 44.0, 'domain_mean': 11.0},
            'pomp-per-image': {'mean': 48.0 + seed, 'domain_mean': 13.0, 'domain-photo': 34.0}}
        runs[f'full-2000/seed{seed}'] = {'iter_seconds': 2.0, 'peak_rss_mb': 1000.0}
        runs[f'sampled-2000/seed{seed}'] = {'iter_seconds': 0.5, 'peak_rss_mb': 400.0}
    with open(tmp_path / 'claims.json', 'w') as f:
        json.dump({'runs': runs, 'eval': evals, 'clip_sha256': read_card()['sha256']}, f)
    table = claims.Claims(args).report()
    assert '| pomp | 51.0 ± 1.4 | 12.0 ± 0.0 | 35.0 ± 0.0 |' in table
    assert '| hand | 40.0 ± 0.0 |' in table
    assert '| K=100, ln | 44.0 ± 0.0 | 11.0 ± 0.0 | 0.500 | 400 | 0.25 | 0.40 |' in table
    assert '| full softmax | 45.0 ± 0.0 | 11.0 ± 0.0 | 2.000 | 1000 | 1.00 | 1.00 |' in table
    assert '| shared (ours) | 51.0 ± 1.4 | 12.0 ± 0.0 | 35.0 ± 0.0 |' in table
    assert '| per_image (official) | 48.5 ± 0.7 | 13.0 ± 0.0 | 34.0 ± 0.0 |' in table
    assert (tmp_path / 'claims.md').read_text().strip() == table.strip()


@pytest.mark.parametrize('recorded', ['0' * 64, None])
def test_runs_of_another_clip_are_not_resumed(tmp_path, recorded):
    """Runs recorded with other world CLIP weights (or before the sha was recorded) would mix
    two CLIPs in one table: refused, naming both hashes."""
    claims = _load()
    state = {'runs': {'pomp/seed0': {'iter_seconds': 1.0}}}
    if recorded:
        state['clip_sha256'] = recorded
    with open(tmp_path / 'claims.json', 'w') as f:
        json.dump(state, f)
    args = claims.parse_args(['--work-dir', str(tmp_path)])
    want = f"another world CLIP \\(sha256 {recorded or 'not recorded'}, now " \
        f"{read_card()['sha256']}\\)"
    with pytest.raises(ValueError, match=want):
        claims.Claims(args)


def test_report_gives_paired_intervals_over_classes_and_seeds(tmp_path):
    """Per-class accuracies recorded per seed -> paired intervals in the table, claims.json
    and a plot; the estimate is the difference of the seed-averaged means."""
    claims = _load()
    args = claims.parse_args(['--work-dir', str(tmp_path), '--seeds', '0', '1'])
    sets = {'colour-shape': 4, 'pattern-shape': 4, 'domain-sketch': 2, 'domain-noisy': 2}
    per_class, evals = {}, {}
    for seed in (0, 1):
        hand = {n: [50.0] * k for n, k in sets.items()}
        pomp = {n: [50.0 + 2 + 2 * seed] * k for n, k in sets.items()}  # +2 and +4 points
        per_image = {n: [50.0 + 1] * k for n, k in sets.items()}
        per_class[f'seed{seed}'] = {'pomp': pomp, 'pomp-per-image': per_image,
                                    **({'hand': hand} if seed == 0 else {})}
        evals[f'seed{seed}'] = {'hand': {'mean': 50.0}, 'pomp': {'mean': 52.0 + 2 * seed}}
    with open(tmp_path / 'claims.json', 'w') as f:
        json.dump({'runs': {}, 'eval': evals, 'per_class': per_class,
                   'clip_sha256': read_card()['sha256']}, f)
    table = claims.Claims(args).report()
    assert '| pomp - hand | +3.0 [+2.0, +4.0] | +3.0 [+2.0, +4.0] | - | - |' in table
    assert '| pomp - pomp-per-image | +2.0 [+1.0, +3.0] |' in table
    saved = json.loads((tmp_path / 'claims.json').read_text())['differences']
    assert saved['pomp - hand']['mean']['estimate'] == pytest.approx(3.0)
    assert (tmp_path / 'claims.png').read_bytes()[:4] == b'\x89PNG'
