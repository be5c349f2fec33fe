"""Model builders: every backbone takes 0..255 input, names its layers for Grad-CAM and the probe."""

from pathlib import Path

import numpy as np
import pytest

from training.architectures import ArchitectureError, build_model

CLASSES = ["covid", "normal", "pneumonia"]


@pytest.mark.parametrize("backbone", ["small_cnn", "vgg16", "mobilenet_v2"])
def test_backbone_builds_offline_and_outputs_probabilities(backbone):
    model = build_model(backbone=backbone, input_size=32, class_names=CLASSES)
    probs = np.asarray(model(np.full((2, 32, 32, 3), 128.0, dtype=np.float32), training=False))
    assert probs.shape == (2, 3)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer("last_conv") and model.get_layer("embedding")


def test_vgg16_has_the_tutorials_head():
    model = build_model(backbone="vgg16", input_size=64, class_names=CLASSES)
    assert model.get_layer("embedding").units == 64
    assert any(layer.__class__.__name__ == "Dropout" and layer.rate == 0.5 for layer in model.layers)


def test_local_weights_file_is_loaded_and_the_base_frozen(tmp_path: Path):
    import keras

    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16-notop.weights.h5"
    base.save_weights(path)
    model = build_model(backbone="vgg16", input_size=32, class_names=CLASSES, weights=str(path))
    loaded = model.get_layer("block1_conv1").get_weights()[0]
    assert np.array_equal(loaded, base.get_layer("block1_conv1").get_weights()[0])
    assert not model.get_layer("block5_conv3").trainable
    assert model.get_layer("probabilities").trainable


def test_a_missing_weights_file_is_a_clear_error():
    with pytest.raises(ArchitectureError, match="Weights file not found"):
        build_model(backbone="vgg16", input_size=32, class_names=CLASSES, weights="/nowhere/w.h5")


def test_an_unknown_backbone_is_a_clear_error():
    with pytest.raises(ArchitectureError, match="Unknown backbone 'resnet9000'"):
        build_model(backbone="resnet9000", input_size=32, class_names=CLASSES)
