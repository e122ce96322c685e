"""Datasets: your own folder (`folders`), KITTI road (`kitti`), CamVid (`camvid`), the synthetic
generator (`synthetic`), box annotations (`boxes`), and the tf.data pipelines (`pipeline`,
`augment`).

`datasets.load_data(config)` finds, checks and splits any of them as the CLI does, and says how
it reads the masks (`data.task`, `data.label_decoder()`); `pipeline.make_dataset` turns pairs
into batches. `kitti` and `synthetic` import no TensorFlow; `pipeline` and `augment` import
TensorFlow.
"""
