import numpy as np

from fcn_tf.data import kitti
from fcn_tf.data.synthetic import ensure_synthetic, render_scene


def test_scenes_are_deterministic_and_distinct():
    first, label = render_scene(seed=3, index=5, height=75, width=248)
    again, _ = render_scene(seed=3, index=5, height=75, width=248)
    other, _ = render_scene(seed=3, index=6, height=75, width=248)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 10


def test_labels_use_kitti_colours_and_look_like_roads():
    fractions = []
    for index in range(8):
        image, label = render_scene(seed=0, index=index)
        assert image.shape == label.shape == (375, 1242, 3)
        kitti.check_label_colours(label, f"scene {index}")
        decoded = kitti.decode_label(label)
        fractions.append((decoded == 1).mean())
        # road is below the horizon: the top third of a scene is never road
        assert not (decoded[:125] == 1).any()
    assert 0.05 < np.mean(fractions) < 0.5


def test_generated_folder_reads_with_the_kitti_loader():
    root = ensure_synthetic(num_train=4, num_test=2, seed=9)
    pairs = kitti.find_pairs(root)
    assert len(pairs) == 4
    assert kitti.check_pairs(pairs, progress=False) == [(375, 1242)] * 4
    assert len(kitti.find_images(root / "testing/image_2")) == 2
    assert ensure_synthetic(num_train=4, num_test=2, seed=9) == root  # cached, not regenerated
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".partial")]
