"""Import of the reference implementation's `best_model.pth`.

The reference model is rebuilt here independently, from the description in the design document
("Reference implementation compatibility"), and loaded with `strict=True` from a state_dict
made from the published key list; the converted Vigil model must compute the same outputs.
"""
import ast
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.video import r2plus1d_18

from detector.errors import CheckpointError
from detector.model import build_model, count_parameters
from detector.reference import (convert_reference_state_dict, expected_reference_shapes,
                                is_reference_state_dict, reference_model_config)

TSV = Path(__file__).parent / "fixtures" / "reference_state_dict_keys.tsv"
REFERENCE_PARAMETERS = 40_509_220


def read_tsv():
    rows = []
    for line in TSV.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(ast.literal_eval(shape)), getattr(torch, dtype.split(".")[1])))
    return rows


def random_reference_state_dict(seed=0):
    """Random values of the published keys and shapes, scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape, dtype in read_tsv():
        if dtype == torch.int64:
            sd[key] = torch.tensor(100, dtype=dtype).reshape(shape)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5          # positive
        elif key.endswith("running_mean") or key.endswith("bias"):
            sd[key] = torch.randn(shape, generator=g) * 0.05
        elif len(shape) == 1:                                         # BatchNorm/LayerNorm scale
            sd[key] = torch.rand(shape, generator=g) * 0.5 + 0.75
        else:
            fan_in = torch.Size(shape[1:]).numel()
            std = 1.0 if key.startswith(("pos_embedding", "queries")) else fan_in ** -0.5
            sd[key] = torch.randn(shape, generator=g) * std
    return sd


# ---- the reference model, written from the design document ---------------------------------

class RefBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        r = r2plus1d_18()
        self.stem = nn.Sequential(r.stem, r.layer1, r.layer2, r.layer3, r.layer4)
        self.proj = nn.Conv3d(512, 256, kernel_size=1)
        self.norm = nn.LayerNorm(256)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):                      # x: (B, T, C, H, W) as the reference feeds it
        f = self.proj(self.stem(x.permute(0, 2, 1, 3, 4)))
        b, c, t, h, w = f.shape
        tokens = f.reshape(b, c, t * h * w).permute(0, 2, 1)
        return self.dropout(self.norm(tokens))


class RefPositional(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10000, 256)

    def forward(self, x):
        positions = torch.arange(x.shape[1], device=x.device)
        return x + self.embedding(positions).unsqueeze(0)


class RefDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerDecoderLayer(d_model=256, nhead=8, dim_feedforward=2048,
                                           dropout=0.1, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=4)

    def forward(self, queries, memory):
        return self.decoder(queries, memory)


class RefHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.class_head = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.1),
                                        nn.Linear(256, 3))
        self.bbox_head = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.1),
                                       nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.1),
                                       nn.Linear(256, 4), nn.Sigmoid())


class ReferenceModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = RefBackbone()
        self.pos_embedding = RefPositional()
        self.queries = nn.Embedding(12, 256)
        self.decoder = RefDecoder()
        self.head = RefHead()

    def forward(self, x):
        memory = self.pos_embedding(self.backbone(x))
        queries = self.queries.weight.unsqueeze(0).repeat(x.shape[0], 1, 1)
        z = self.decoder(queries, memory)
        return {"pred_logits": self.head.class_head(z), "pred_boxes": self.head.bbox_head(z)}


# ---- tests -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_sd():
    return random_reference_state_dict()


def test_published_keys_and_shapes_are_exactly_our_architecture():
    expected = expected_reference_shapes()
    published = {key: shape for key, shape, _ in read_tsv()}
    assert expected == published


def test_reference_config_has_the_published_parameter_count():
    with torch.device("meta"):                 # shapes only: counting needs no memory
        model = build_model(reference_model_config())
        independent = ReferenceModel()
    assert count_parameters(model) == REFERENCE_PARAMETERS
    assert count_parameters(independent) == REFERENCE_PARAMETERS
    assert model.num_tokens == 392                          # 2x14x14 at 224x224, no pooling


def test_converted_checkpoint_computes_what_the_reference_model_computes(reference_sd):
    with torch.device("meta"):                 # no random init: every weight is assigned
        reference = ReferenceModel()
    reference.load_state_dict(reference_sd, strict=True, assign=True)
    sd, cfg = convert_reference_state_dict(reference_sd)
    ours = build_model(cfg)
    ours.load_state_dict(sd, strict=True)
    reference.eval()
    ours.eval()
    # 16 frames of 32x32 instead of 224x224 (valid without pooling): 2x2x2 = 8 tokens, so the
    # token order over time and space is still exercised, at a fraction of the cost.
    x = torch.randn(1, 16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = reference(x)
        got = ours(x.permute(0, 2, 1, 3, 4))
    assert want["pred_logits"].std() > 1e-3                # the comparison is not trivial
    torch.testing.assert_close(got["pred_logits"], want["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["pred_boxes"], want["pred_boxes"], atol=1e-5, rtol=1e-5)


def test_reference_config_values():
    cfg = reference_model_config()
    assert cfg.backbone.name == "r2plus1d_18" and cfg.backbone.pool is None
    assert cfg.input.size == [224, 224] and cfg.input.frames == 16
    assert cfg.input.mean == [0.485, 0.456, 0.406] and cfg.input.std == [0.229, 0.224, 0.225]
    assert cfg.class_names == ["fight", "collapse"] and cfg.pos_table_len == 10000


def test_detection_of_reference_state_dicts(reference_sd):
    assert is_reference_state_dict(reference_sd)
    assert is_reference_state_dict({f"module.{k}": v for k, v in reference_sd.items()})
    sd, _ = convert_reference_state_dict(reference_sd)
    assert not is_reference_state_dict(sd)
    assert not is_reference_state_dict({"format": "vigil.checkpoint/1", **reference_sd})
    assert not is_reference_state_dict([1, 2])


def test_missing_key_is_named(reference_sd):
    broken = dict(reference_sd)
    del broken["decoder.decoder.layers.2.norm3.bias"]
    key = r"decoder\.decoder\.layers\.2\.norm3\.bias"
    with pytest.raises(CheckpointError, match=r"best_model\.pth.*missing key '" + key):
        convert_reference_state_dict(broken, source="best_model.pth")


def test_wrong_shape_is_named(reference_sd):
    broken = dict(reference_sd)
    broken["head.class_head.3.weight"] = torch.zeros(4, 256)     # three classes, not two
    with pytest.raises(CheckpointError, match=r"head\.class_head\.3\.weight.*\(4, 256\)"):
        convert_reference_state_dict(broken)


def test_unexpected_key_is_named(reference_sd):
    broken = dict(reference_sd)
    broken["encoder.layers.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="encoder.layers.0.weight"):
        convert_reference_state_dict(broken)


def test_load_checkpoint_accepts_a_raw_reference_file(reference_sd, tmp_path, caplog):
    from detector import load_checkpoint

    path = tmp_path / "best_model.pth"
    torch.save(reference_sd, path)
    with caplog.at_level(logging.INFO, logger="detector"):
        model, cfg, meta = load_checkpoint(path)
    assert cfg == reference_model_config()
    assert meta["format"] == "reference" and meta["num_parameters"] == REFERENCE_PARAMETERS
    assert any("reference" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records)
    assert not model.training
    assert torch.equal(model.queries.weight, reference_sd["queries.weight"])
    assert torch.equal(model.backbone.body[4][1].conv2[0][3].weight,
                       reference_sd["backbone.stem.4.1.conv2.0.3.weight"])
