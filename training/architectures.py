"""Model builders. Every model takes (S, S, 3) float input in 0..255 and scales it itself.

The last convolutional feature map is named ``last_conv`` for Grad-CAM, and the
pooled features ``embedding`` for the shortcut probe. Only built-in Keras layers
are used, so an artifact loads anywhere without custom objects.
"""

from pathlib import Path
from typing import Any

from inference.services import LAST_CONV_LAYER as LAST_CONV

BACKBONES = ("small_cnn", "vgg16", "resnet50", "mobilenet_v2", "densenet121", "efficientnet_b0")
# Small data means few steps per epoch: Keras' default 0.99 leaves the moving statistics
# near their initial values for many epochs, and inference-mode predictions collapse.
BN_MOMENTUM = 0.9
IMAGENET_MEAN_BGR = [103.939, 116.779, 123.68]
IMAGENET_MEAN_RGB_01 = [0.485, 0.456, 0.406]
IMAGENET_STD_RGB_01 = [0.229, 0.224, 0.225]


class ArchitectureError(ValueError):
    pass


def _resolve_weights(weights: str) -> str | None:
    """``none`` → random init; ``imagenet`` → Keras download (needs network); else a local file."""
    if weights in ("", "none", None):
        return None
    if weights == "imagenet":
        return "imagenet"
    if not Path(weights).is_file():
        raise ArchitectureError(f"Weights file not found: {weights}")
    return weights


def weights_check(*, backbone: str, weights: str) -> str | None:
    """The weights a backbone would start from (None: random), or ArchitectureError saying why not:
    asked before a run is queued, so that a bad pair is a 400, not a run failing in the worker."""
    resolved = _resolve_weights(weights)
    if backbone == "small_cnn" and resolved is not None:
        raise ArchitectureError("small_cnn has no pretrained weights; use weights='none'.")
    return resolved


def _small_cnn(inputs: Any, layers: Any) -> Any:
    """A compact CNN (~0.35 M parameters) that trains from scratch on 2 CPU cores in minutes."""
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(32, 5, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    for filters in (64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(192, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.ReLU(name=LAST_CONV)(x)


def _application(backbone: str, inputs: Any, layers: Any, weights: str | None) -> Any:
    import keras

    apps = keras.applications
    if backbone in ("vgg16", "resnet50"):
        # "caffe" preprocessing; the image is gray, so channel order does not matter.
        x = layers.Normalization(mean=IMAGENET_MEAN_BGR, variance=[1.0, 1.0, 1.0])(inputs)
        builder = apps.VGG16 if backbone == "vgg16" else apps.ResNet50
    elif backbone == "mobilenet_v2":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
        builder = apps.MobileNetV2
    elif backbone == "densenet121":
        x = layers.Rescaling(1.0 / 255)(inputs)
        x = layers.Normalization(mean=IMAGENET_MEAN_RGB_01, variance=[s * s for s in IMAGENET_STD_RGB_01])(x)
        builder = apps.DenseNet121
    else:  # efficientnet_b0 scales its own input
        x = inputs
        builder = apps.EfficientNetB0
    base = builder(include_top=False, weights=weights, input_tensor=x)
    if weights is not None:
        base.trainable = False  # transfer learning, as in the tutorial: train the head only
    return layers.Activation("linear", name=LAST_CONV)(base.output)


def build_model(
    *, backbone: str, input_size: int, class_names: list[str], weights: str = "none", dropout: float = 0.3
) -> Any:
    """Build an uncompiled classifier. ``vgg16`` has the tutorial's head (pool 4x4, dense 64, dropout 0.5)."""
    import keras
    from keras import layers

    if backbone not in BACKBONES:
        raise ArchitectureError(f"Unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}.")
    resolved = weights_check(backbone=backbone, weights=weights)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    if backbone == "small_cnn":
        features = _small_cnn(inputs, layers)
    else:
        features = _application(backbone, inputs, layers, resolved)
    if backbone == "vgg16":
        x = layers.AveragePooling2D(pool_size=(4, 4), padding="same")(features)
        x = layers.Flatten()(x)
        x = layers.Dense(64, activation="relu", name="embedding")(x)
        x = layers.Dropout(0.5)(x)
    else:
        x = layers.GlobalAveragePooling2D(name="embedding")(features)
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(len(class_names), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=backbone)
