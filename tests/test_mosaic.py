"""trainer.mosaic: four images of one source tiled 2x2 and cut back to one image's size, objects at their scale."""
import torch
from torchvision import tv_tensors

from simgen.train.engine import Mosaic, TrainerConfig, train_transforms
from simgen.train.utility import run_identity


class Flat(torch.utils.data.Dataset):
    """Image k is filled with grey level 40 * (k + 1) and holds two 20x20 boxes labelled k + 1 (masks included)."""

    def __init__(self, n: int = 4, h: int = 64, w: int = 96) -> None:
        self.n, self.h, self.w = n, h, w

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int):
        img = tv_tensors.Image(torch.full((3, self.h, self.w), 40 * (k + 1), dtype=torch.uint8))
        boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 30.0, 70.0, 50.0]])
        masks = torch.zeros((2, self.h, self.w), dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        return img, {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(self.h, self.w)),
                     "labels": torch.tensor([k + 1, k + 1]), "masks": tv_tensors.Mask(masks), "image_id": k}


def test_mosaic_items_keep_size_scale_and_true_labels():
    """Every kept box lies inside the image, keeps its 20 px size unless cut by the window, covers pixels of the
    image its label came from, and its mask matches it; boxes cut below a quarter of their area are dropped."""
    torch.manual_seed(0)
    ds = Mosaic(Flat(), None, p=1.0)
    seen_sources = set()
    for _ in range(40):
        img, t = ds[int(torch.randint(4, ()))]
        assert img.shape == (3, 64, 96)
        b, lab, m = t["boxes"], t["labels"], t["masks"]
        assert len(b) == len(lab) == len(m)
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 96).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 64).all()
        wh = b[:, 2:] - b[:, :2]
        assert (wh <= 20 + 1e-4).all() and (wh[:, 0] * wh[:, 1] >= 0.25 * 400 - 1e-3).all()
        for box, k, mask in zip(b.round().int().tolist(), lab.tolist(), m):
            x0, y0, x1, y1 = box
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            assert int(img[0, cy, cx]) == 40 * k  # the box sits on the image its label came from
            assert mask.sum() == (x1 - x0) * (y1 - y0) and mask[cy, cx] == 1
            seen_sources.add(k)
    assert seen_sources == {1, 2, 3, 4}


def test_mosaic_is_seeded_and_off_is_the_plain_item():
    tf = train_transforms(TrainerConfig(crop=None, color_jitter=0, grayscale_p=0, blur_p=0, hflip=False, vflip=False), 64)
    torch.manual_seed(3)
    a = Mosaic(Flat(), tf, p=1.0)[1]
    torch.manual_seed(3)
    b = Mosaic(Flat(), tf, p=1.0)[1]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    off_img, off_t = Mosaic(Flat(), tf, p=0.0)[2]
    plain_img, plain_t = tf(*Flat()[2])
    assert torch.equal(off_img, plain_img) and torch.equal(off_t["boxes"], plain_t["boxes"])
    # half the items become mosaics (four sources on one image), half stay whole
    torch.manual_seed(0)
    mixed = [len(set(Mosaic(Flat(), None, p=0.5)[0][0][0].unique().tolist()) - {114}) > 1 for _ in range(200)]
    assert 70 < sum(mixed) < 130


def test_mosaic_off_keeps_the_run_identity():
    """Runs trained before the setting existed are read back, not retrained; mosaic on is a different run."""
    base = run_identity(TrainerConfig())
    assert "mosaic" not in base
    assert run_identity(TrainerConfig(mosaic=0.5))["mosaic"] == 0.5
