"""Flax Linen models of the documents: reduced AlexNet, VGG16, ResNet-34, LeNet, cifar10-quick.

``models.create(name, num_classes)`` builds one by name;
``models.param_count(name, input_shape, num_classes)`` counts its parameters.
"""

from models.alexnet import AlexNet
from models.caffe import CifarQuick, LeNet5
from models.gpt import GPT
from models.registry import MODEL_NAMES, MODELS, create, param_count, takes_tokens
from models.resnet import BasicBlock, ResNet
from models.tiny import Tiny
from models.vgg import VGG, VGG16_LAYERS

__all__ = [
    "GPT",
    "MODELS",
    "MODEL_NAMES",
    "VGG",
    "VGG16_LAYERS",
    "AlexNet",
    "BasicBlock",
    "CifarQuick",
    "LeNet5",
    "ResNet",
    "Tiny",
    "create",
    "param_count",
    "takes_tokens",
]
