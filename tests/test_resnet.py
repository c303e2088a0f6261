"""The ResNet-18 image encoder: torchvision's parameter names and shapes (hard-coded below,
so torchvision is not needed to check them), 512-d output, grayscale adaptation of RGB
weights, export round trip."""

import pytest
import torch

from pointssl.backbones import save_backbone
from pointssl.backbones.resnet import ResNet18, load_image_encoder, torchvision_state_dict
from pointssl.errors import PointSSLError

# torchvision.models.resnet18().state_dict(): "name shape" in order ("-" = a 0-d tensor)
TORCHVISION_RESNET18 = """
conv1.weight 64,3,7,7
bn1.weight 64
bn1.bias 64
bn1.running_mean 64
bn1.running_var 64
bn1.num_batches_tracked -
layer1.0.conv1.weight 64,64,3,3
layer1.0.bn1.weight 64
layer1.0.bn1.bias 64
layer1.0.bn1.running_mean 64
layer1.0.bn1.running_var 64
layer1.0.bn1.num_batches_tracked -
layer1.0.conv2.weight 64,64,3,3
layer1.0.bn2.weight 64
layer1.0.bn2.bias 64
layer1.0.bn2.running_mean 64
layer1.0.bn2.running_var 64
layer1.0.bn2.num_batches_tracked -
layer1.1.conv1.weight 64,64,3,3
layer1.1.bn1.weight 64
layer1.1.bn1.bias 64
layer1.1.bn1.running_mean 64
layer1.1.bn1.running_var 64
layer1.1.bn1.num_batches_tracked -
layer1.1.conv2.weight 64,64,3,3
layer1.1.bn2.weight 64
layer1.1.bn2.bias 64
layer1.1.bn2.running_mean 64
layer1.1.bn2.running_var 64
layer1.1.bn2.num_batches_tracked -
layer2.0.conv1.weight 128,64,3,3
layer2.0.bn1.weight 128
layer2.0.bn1.bias 128
layer2.0.bn1.running_mean 128
layer2.0.bn1.running_var 128
layer2.0.bn1.num_batches_tracked -
layer2.0.conv2.weight 128,128,3,3
layer2.0.bn2.weight 128
layer2.0.bn2.bias 128
layer2.0.bn2.running_mean 128
layer2.0.bn2.running_var 128
layer2.0.bn2.num_batches_tracked -
layer2.0.downsample.0.weight 128,64,1,1
layer2.0.downsample.1.weight 128
layer2.0.downsample.1.bias 128
layer2.0.downsample.1.running_mean 128
layer2.0.downsample.1.running_var 128
layer2.0.downsample.1.num_batches_tracked -
layer2.1.conv1.weight 128,128,3,3
layer2.1.bn1.weight 128
layer2.1.bn1.bias 128
layer2.1.bn1.running_mean 128
layer2.1.bn1.running_var 128
layer2.1.bn1.num_batches_tracked -
layer2.1.conv2.weight 128,128,3,3
layer2.1.bn2.weight 128
layer2.1.bn2.bias 128
layer2.1.bn2.running_mean 128
layer2.1.bn2.running_var 128
layer2.1.bn2.num_batches_tracked -
layer3.0.conv1.weight 256,128,3,3
layer3.0.bn1.weight 256
layer3.0.bn1.bias 256
layer3.0.bn1.running_mean 256
layer3.0.bn1.running_var 256
layer3.0.bn1.num_batches_tracked -
layer3.0.conv2.weight 256,256,3,3
layer3.0.bn2.weight 256
layer3.0.bn2.bias 256
layer3.0.bn2.running_mean 256
layer3.0.bn2.running_var 256
layer3.0.bn2.num_batches_tracked -
layer3.0.downsample.0.weight 256,128,1,1
layer3.0.downsample.1.weight 256
layer3.0.downsample.1.bias 256
layer3.0.downsample.1.running_mean 256
layer3.0.downsample.1.running_var 256
layer3.0.downsample.1.num_batches_tracked -
layer3.1.conv1.weight 256,256,3,3
layer3.1.bn1.weight 256
layer3.1.bn1.bias 256
layer3.1.bn1.running_mean 256
layer3.1.bn1.running_var 256
layer3.1.bn1.num_batches_tracked -
layer3.1.conv2.weight 256,256,3,3
layer3.1.bn2.weight 256
layer3.1.bn2.bias 256
layer3.1.bn2.running_mean 256
layer3.1.bn2.running_var 256
layer3.1.bn2.num_batches_tracked -
layer4.0.conv1.weight 512,256,3,3
layer4.0.bn1.weight 512
layer4.0.bn1.bias 512
layer4.0.bn1.running_mean 512
layer4.0.bn1.running_var 512
layer4.0.bn1.num_batches_tracked -
layer4.0.conv2.weight 512,512,3,3
layer4.0.bn2.weight 512
layer4.0.bn2.bias 512
layer4.0.bn2.running_mean 512
layer4.0.bn2.running_var 512
layer4.0.bn2.num_batches_tracked -
layer4.0.downsample.0.weight 512,256,1,1
layer4.0.downsample.1.weight 512
layer4.0.downsample.1.bias 512
layer4.0.downsample.1.running_mean 512
layer4.0.downsample.1.running_var 512
layer4.0.downsample.1.num_batches_tracked -
layer4.1.conv1.weight 512,512,3,3
layer4.1.bn1.weight 512
layer4.1.bn1.bias 512
layer4.1.bn1.running_mean 512
layer4.1.bn1.running_var 512
layer4.1.bn1.num_batches_tracked -
layer4.1.conv2.weight 512,512,3,3
layer4.1.bn2.weight 512
layer4.1.bn2.bias 512
layer4.1.bn2.running_mean 512
layer4.1.bn2.running_var 512
layer4.1.bn2.num_batches_tracked -
fc.weight 1000,512
fc.bias 1000
"""


def _reference():
    out = []
    for line in TORCHVISION_RESNET18.strip().splitlines():
        k, s = line.split()
        out.append((k, () if s == "-" else tuple(int(v) for v in s.split(","))))
    return out


def test_state_dict_names_and_shapes_are_torchvisions():
    m = ResNet18(in_channels=3, num_classes=1000)
    ours = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert ours == _reference()
    assert len(ours) == 122 and len(list(m.parameters())) == 62
    assert sum(p.numel() for p in m.parameters()) == 11_689_512  # torchvision's count


def test_encoder_gives_512_after_global_average_pooling():
    m = ResNet18().eval()  # grayscale, no fc: the paper's F_img
    assert "fc.weight" not in m.state_dict() and m.global_dim == 512
    with torch.no_grad():
        f = m(torch.rand(2, 1, 64, 48))
    assert f.shape == (2, 512) and (f >= 0).all()  # GAP after ReLU
    with pytest.raises(PointSSLError, match=r"takes \(B, 1, H, W\)"):
        m(torch.rand(2, 3, 64, 64))


def test_rgb_weights_load_into_the_grayscale_encoder_with_the_same_response():
    torch.manual_seed(0)
    rgb = ResNet18(in_channels=3, num_classes=1000).eval()
    for b in rgb.modules():  # non-trivial BN statistics
        if isinstance(b, torch.nn.BatchNorm2d):
            b.running_mean.uniform_(-0.1, 0.1)
            b.running_var.uniform_(0.5, 1.5)
    gray = ResNet18(in_channels=1).eval()
    gray.load_state_dict(torchvision_state_dict(rgb.state_dict(), in_channels=1))
    img = torch.rand(2, 1, 40, 40)
    rgb.fc = None
    with torch.no_grad():
        assert torch.allclose(gray(img), rgb(img.expand(-1, 3, -1, -1)), atol=1e-5)


def test_export_round_trip(tmp_path):
    m = ResNet18(**ResNet18.test_config()).eval()
    save_backbone(tmp_path / "image_encoder.pt", m, steps=3)
    again, meta = load_image_encoder(tmp_path / "image_encoder.pt")
    assert again.config == m.config and meta["steps"] == 3
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), m(x))


def test_channels_last_layout_computes_what_the_nchw_network_computes():
    torch.manual_seed(0)
    m = ResNet18(widths=(4, 8, 8, 16))
    assert m.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    nchw = ResNet18(widths=(4, 8, 8, 16)).to(memory_format=torch.contiguous_format)
    nchw.load_state_dict(m.state_dict())
    assert nchw.conv1.weight.is_contiguous()
    x = torch.randn(3, 1, 40, 40)
    for train in (True, False):
        m.train(train), nchw.train(train)
        torch.testing.assert_close(m(x), nchw(x), rtol=1e-4, atol=1e-5)
    m.train()(x).sum().backward()
    nchw.train()(x).sum().backward()
    a, b = m.conv1.weight.grad, nchw.conv1.weight.grad  # summed in another order
    assert (a - b).norm() < 1e-3 * b.norm()
