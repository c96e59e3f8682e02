import logging

import pytest

from pomp_mm.vocabulary import (Vocabulary, builtin_vocabularies, clean_name, load_vocabulary,
                                parse_vocabulary)


def test_imagenet21k_from_timm():
    v = load_vocabulary('imagenet21k')
    assert len(v) == 21841
    assert v.ids[0] == 'n00004475' and v.names[0] == 'organism'  # 'organism, being'
    assert all(i.startswith('n') and len(i) == 9 for i in v.ids)
    assert len(set(v.ids)) == 21841  # ids stay unique where lemmas collide
    assert all('_' not in n for n in v.names)


def test_imagenet21k_p_is_the_winter21_subset():
    full, sub = load_vocabulary('imagenet21k'), load_vocabulary('imagenet21k-p')
    assert len(sub) == 10450
    assert set(sub.ids) <= set(full.ids)
    name = dict(zip(full.ids, full.names))
    assert all(name[i] == n for i, n in zip(sub.ids, sub.names))


def test_imagenet1k_names_from_open_clip():
    v = load_vocabulary('imagenet1k')
    assert len(v) == 1000
    assert v.names[0] == 'tench' and v.ids[0] == 'n01440764'


@pytest.mark.parametrize('name,count,first', [
    ('voc', 20, 'aeroplane'), ('coco', 80, 'person'), ('coco-stuff', 171, 'person'),
    ('ade20k', 150, 'wall'), ('pascal-context', 59, 'aeroplane'), ('lvis', 1203, 'aerosol can'),
    ('objects365', 365, 'Person'),
])
def test_toolkit_vocabularies(name, count, first):
    v = load_vocabulary(name)
    assert len(v) == count
    assert v.names[0] == first
    assert 'background' not in v.names


def test_lvis_ids_keep_raw_names():
    v = load_vocabulary('lvis')
    assert v.ids[0] == 'aerosol_can' and v.names[0] == 'aerosol can'


def test_clean_name():
    assert clean_name('  bow_(weapon) ') == 'bow (weapon)'
    assert clean_name('wall-concrete') == 'wall-concrete'
    assert clean_name('hot  air\tballoon') == 'hot air balloon'


def test_user_vocabularies(tmp_path):
    f = tmp_path / 'classes.txt'
    f.write_text('# my classes\ncat\n\nsofa_bed  # a comment\n window \n')
    assert parse_vocabulary(str(f)).names == ('cat', 'sofa bed', 'window')
    assert parse_vocabulary(str(f)).source == str(f)
    assert parse_vocabulary('cat . sofa . window').names == ('cat', 'sofa', 'window')
    assert parse_vocabulary('headphone . webcam . mug .').names == ('headphone', 'webcam', 'mug')
    assert parse_vocabulary('cat .').names == ('cat',)
    listed = parse_vocabulary(['cat', 'traffic_light'])
    assert listed.names == ('cat', 'traffic light')
    # ids keep the dataset spelling, so metainfo['classes'] still matches the vocabulary
    assert listed.ids == ('cat', 'traffic_light')
    assert parse_vocabulary(str(f)).ids == ('cat', 'sofa_bed', 'window')
    assert parse_vocabulary('LVIS') is load_vocabulary('lvis')


def test_errors():
    with pytest.raises(ValueError, match='empty'):
        parse_vocabulary([])
    with pytest.raises(ValueError, match='class 1 has an empty'):
        parse_vocabulary(['cat', '  '])
    with pytest.raises(KeyError, match="unknown built-in vocabulary 'imagenet42k'; known: ade20k"):
        load_vocabulary('imagenet42k')
    with pytest.raises(ValueError, match="write 'giraffe .'"):
        parse_vocabulary('giraffe')
    assert 'imagenet21k-p' in builtin_vocabularies()


def test_duplicates_warned_and_kept(caplog):
    with caplog.at_level(logging.WARNING):
        v = Vocabulary(('cat', 'Dog', 'dog', 'cat'))
    assert v.names == ('cat', 'Dog', 'dog', 'cat')
    assert "2 duplicate name(s)" in caplog.text and "'dog' (classes 1 and 2)" in caplog.text


def test_a_missing_vocabulary_file_is_reported_as_a_file(tmp_path):
    from pomp_mm.vocabulary import parse_vocabulary
    for spec in (str(tmp_path / 'classes.txt'), 'data/classes', 'mine.csv'):
        with pytest.raises(FileNotFoundError, match=f'vocabulary file not found: {spec!r}'):
            parse_vocabulary(spec)
    with pytest.raises(ValueError, match="for a single class write 'zebra .'"):
        parse_vocabulary('zebra')
