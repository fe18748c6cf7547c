"""The released checkpoints by name: InstaFormer, InstaOrderNet and the Mask2Former starting points.

Each :class:`ZooEntry` names its config (relative to ``configs/``), its download URL, the file name
it is cached under and the metrics its authors published (InstaOrder val; COCO panoptic val for
Mask2Former). Names are used as

* ``Predictor.from_pretrained(NAME)``, ``instaformer-demo --model NAME``,
  ``train_net.py --model NAME``: the entry's config **and** its weights;
* ``MODEL.WEIGHTS zoo://NAME``: the weights only, with any config (e.g. an InstaFormer config
  started from a Mask2Former checkpoint). Every InstaFormer loader of weights resolves the name
  with :func:`fetch` (the Mask2Former package knows no zoo).

Files are fetched by :mod:`mask2former.utils.download` (cache ``$INSTAFORMER_CACHE``). No entry
records a sha256 or a size yet (``None``: the files could not be fetched to measure them); the
sha256 of every download is logged.

Command line: ``instaformer-zoo list`` / ``python -m instaformer.model_zoo list`` prints the table,
``instaformer-zoo download NAME`` fetches a file and prints its path, ``instaformer-zoo path NAME``
prints where the file goes in the cache (to put it there by hand) and its URL.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from instaformer.config import resolve_config_file
from instaformer.vocabulary import TASK_DIRS
from mask2former.utils import download

__all__ = [
    "ENTRIES",
    "ZOO_SCHEME",
    "ZooEntry",
    "fetch",
    "get_entry",
    "model_args",
    "main",
    "cli",
]

ZOO_SCHEME = "zoo://"
DRIVE_URL = "https://drive.google.com/uc?id={id}&export=download"
MASK2FORMER_URL = "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/panoptic/{config}/model_final_{h}.pkl"

OCCLUSION_METRICS = ("Occ R", "Occ P", "Occ F1")
DEPTH_METRICS = ("WHDR distinct", "WHDR overlap", "WHDR all")
PANOPTIC_METRICS = ("PQ", "AP", "mIoU")


@dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint.

    Attributes:
        name: short name (``instaformer_od_swin_t``).
        family: ``"instaformer"``, ``"instaordernet"`` or ``"mask2former"``.
        backbone: ``"Swin-T"``, ``"Swin-B†"`` (ImageNet-21k), ``"R50"``, ...
        config: config name relative to ``configs/`` (``instaformer.config.resolve_config_file``).
        url: download URL (Google Drive ``uc`` link or HTTPS file).
        file_name: name of the cached file; its extension tells the loader the format.
        metrics: published metrics (percent), named as in the evaluation table.
        sha256: hex digest of the file, ``None`` when unknown.
        size: bytes, ``None`` when unknown.
        note: what to know before using the entry.
    """

    name: str
    family: str
    backbone: str
    config: str
    url: str
    file_name: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    sha256: str | None = None
    size: int | None = None
    note: str = ""

    @property
    def weights(self) -> str:
        """The ``MODEL.WEIGHTS`` value naming this file: ``zoo://NAME``."""
        return ZOO_SCHEME + self.name

    def remote(self) -> download.RemoteFile:
        """What :func:`mask2former.utils.download.download` fetches for this entry."""
        return download.RemoteFile(self.url, self.file_name, self.sha256, self.size)


# Swin backbones of the released InstaFormer configs: short key, label, config file stem.
_SWIN = {
    "t": ("Swin-T", "maskformer2_swin_tiny_bs16_50ep"),
    "s": ("Swin-S", "maskformer2_swin_small_bs16_50ep"),
    "b": ("Swin-B", "maskformer2_swin_base_384_bs16_50ep"),
    "b_in21k": ("Swin-B†", "maskformer2_swin_base_IN21k_384_bs16_50ep"),
    "l_in21k": ("Swin-L† (200 queries)", "maskformer2_swin_large_IN21k_384_bs16_100ep"),
}

# (task, swin key) -> Google Drive id and published metrics (occlusion R/P/F1, WHDR d/o/a).
_INSTAFORMER = {
    ("o", "t"): ("1rmUSGSqalLGaz2px-mTiibp4i0pKfRw8", (89.06, 75.69, 79.63), None),
    ("o", "s"): ("112ulEuoXZ2uoZL7F-8qtovxQdIe_jo8C", (88.91, 77.31, 80.53), None),
    ("o", "b"): ("11PMOCIFBL9_7JBYE6d_mNvU4m2gY8ajq", (89.02, 76.95, 80.64), None),
    ("o", "b_in21k"): ("1SIr0RlZAi-ndQQfGLlVC2717aKVCBDbk", (89.53, 77.34, 80.99), None),
    ("o", "l_in21k"): ("1-q3vNmP0eiy5gFKGugpsw1gAxDTUD4Ng", (89.82, 78.10, 81.89), None),
    ("d", "t"): ("137R9UTYY1GtQjFbMk5bXLKkq4RvJVNIG", None, (8.10, 25.43, 13.75)),
    ("d", "s"): ("1Ox3y-tqJ2srMSPD75LQiX3k3xbsgB3zs", None, (8.44, 26.04, 14.48)),
    ("d", "b"): ("18V0p7OLzbIv8jTYlmmGBOjmFt31IlBX8", None, (8.28, 25.05, 13.88)),
    ("d", "b_in21k"): ("18ABPKCQK-LrbEg_uJO7zybnT4Jhf9Ici", None, (8.15, 25.19, 13.72)),
    ("d", "l_in21k"): ("1UJqq7zi3hX1WKD_ty_5Zk9RMtd5cXSYx", None, (8.47, 24.91, 13.73)),
    ("od", "t"): ("1OzJkFRyboCSxdjJgmkplxS73pXxqlDAU", (88.64, 75.56, 79.74), (8.43, 25.36, 14.03)),
    ("od", "s"): ("1_L4JfpgmcUebWHse-4G442EV68EJOHwt", (88.20, 75.98, 79.57), (8.54, 25.42, 13.96)),
    ("od", "b"): ("1b8xE_dgyEIr7cJ2xH7EikEuhFODQ1hcY", (88.47, 75.96, 79.72), (8.84, 25.77, 14.39)),
    ("od", "b_in21k"): (
        "1NZaMiR-f16MikArzaHxiFGw1Q8xHxbfa",
        (89.24, 76.66, 80.34),
        (8.15, 25.79, 14.06),
    ),
    ("od", "l_in21k"): (
        "1lH_cn1SqDl7jMv5BP8DhuRYtzME0PCZI",
        (89.57, 78.07, 81.37),
        (7.90, 24.68, 13.30),
    ),
}

# task -> Google Drive id and published metrics of the standalone InstaOrderNet.
_INSTAORDERNET = {
    "o": ("1pTDnyYG3VoARCuwWul3evjXMUNVSiz-1", (89.39, 79.83, 80.65), None),
    "d": ("1kgM0Yj8zK-Hd3Y7ZpXtBEg35uhUkcdR4", None, (12.95, 25.96, 17.51)),
    "od": ("1QLikFxNOEW1Ld2oAZff8mL26FO4Mwwpv", (82.37, 88.67, 81.86), (11.51, 25.22, 15.99)),
}

# Mask2Former COCO panoptic: short key -> label, reference config name, file hash, PQ/AP/mIoU,
# config of this repository that builds the network the file fills.
_SWIN_RECIPE = "instaorder/occlusion_depth/all/swin/{}.yaml"
_MASK2FORMER = {
    "r50": (
        "R50",
        "maskformer2_R50_bs16_50ep",
        "94dc52",
        (51.9, 41.7, 61.7),
        "instaorder/maskformer2_R50_bs16_50ep.yaml",
    ),
    "r101": (
        "R101",
        "maskformer2_R101_bs16_50ep",
        "b807bd",
        (52.6, 42.6, 62.4),
        "instaorder/maskformer2_R101_bs16_50ep.yaml",
    ),
    "swin_t": ("Swin-T", _SWIN["t"][1], "9fd0ae", (53.2, 43.3, 63.2), None),
    "swin_s": ("Swin-S", _SWIN["s"][1], "a407fd", (54.6, 44.7, 64.2), None),
    "swin_b": ("Swin-B", _SWIN["b"][1], "9d7f02", (55.1, 45.2, 65.1), None),
    "swin_b_in21k": ("Swin-B†", _SWIN["b_in21k"][1], "54b88a", (56.4, 46.3, 67.1), None),
    "swin_l_in21k": (
        "Swin-L† (200 queries)",
        _SWIN["l_in21k"][1],
        "f07440",
        (57.8, 48.6, 67.4),
        None,
    ),
}
_M2F_SWIN_NOTE = (
    "configs/ has no Mask2Former-only Swin config: the InstaFormer^od config of this backbone "
    "(the training recipe's) builds the network; the order head and adapters are not in the file"
)


def _metrics(occlusion, depth) -> dict[str, float]:
    out: dict[str, float] = {}
    if occlusion is not None:
        out.update(zip(OCCLUSION_METRICS, occlusion, strict=True))
    if depth is not None:
        out.update(zip(DEPTH_METRICS, depth, strict=True))
    return out


def _build_entries() -> tuple[ZooEntry, ...]:
    entries = []
    for (task, key), (drive_id, occ, depth) in _INSTAFORMER.items():
        label, stem = _SWIN[key]
        name = f"instaformer_{task}_swin_{key}"
        entries.append(
            ZooEntry(
                name=name,
                family="instaformer",
                backbone=label,
                config=f"instaorder/{TASK_DIRS[task]}/all/swin/{stem}.yaml",
                url=DRIVE_URL.format(id=drive_id),
                file_name=f"{name}.pth",
                metrics=_metrics(occ, depth),
            )
        )
    for task, (drive_id, occ, depth) in _INSTAORDERNET.items():
        entries.append(
            ZooEntry(
                name=f"instaordernet_{task}",
                family="instaordernet",
                backbone="ResNet-50",
                config=f"instaordernet/InstaOrderNet_{task}.yaml",
                url=DRIVE_URL.format(id=drive_id),
                file_name=f"InstaOrder_InstaOrderNet_{task}.pth.tar",
                metrics=_metrics(occ, depth),
                note="pair classifier on given masks: evaluate with train_net.py --eval-only",
            )
        )
    for key, (label, ref_config, digest, panoptic, config) in _MASK2FORMER.items():
        entries.append(
            ZooEntry(
                name=f"mask2former_{key}",
                family="mask2former",
                backbone=label,
                config=config or _SWIN_RECIPE.format(ref_config),
                url=MASK2FORMER_URL.format(config=ref_config, h=digest),
                file_name=f"mask2former_{key}_model_final_{digest}.pkl",
                metrics=dict(zip(PANOPTIC_METRICS, panoptic, strict=True)),
                note="" if config else _M2F_SWIN_NOTE,
            )
        )
    return tuple(entries)


ENTRIES: tuple[ZooEntry, ...] = _build_entries()
"""Every released checkpoint: 15 InstaFormer, 3 InstaOrderNet, 7 Mask2Former COCO panoptic."""

_BY_NAME = {e.name: e for e in ENTRIES}


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name`` (a leading ``zoo://`` is accepted).

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    key = name.removeprefix(ZOO_SCHEME)
    if key not in _BY_NAME:
        raise KeyError(
            f"unknown model {name!r}; known models (instaformer-zoo list): {', '.join(_BY_NAME)}"
        )
    return _BY_NAME[key]


def model_args(name: str, *, for_images: bool = False) -> tuple[str, list[str]]:
    """What ``--model NAME`` means: the config file path and the ``MODEL.WEIGHTS`` override.

    Args:
        name: a zoo name.
        for_images: the caller runs the model on images (predictor, demo): InstaOrderNet entries,
            which classify pairs of given masks, are refused.

    Returns:
        ``(config_file, ["MODEL.WEIGHTS", "zoo://NAME"])``.

    Raises:
        KeyError: unknown name.
        ValueError: an InstaOrderNet entry with ``for_images``.
    """
    entry = get_entry(name)
    if for_images and entry.family == "instaordernet":
        raise ValueError(
            f"{entry.name} is an InstaOrderNet pair classifier (it needs instance masks, not just "
            f"an image); evaluate it with: train_net.py --model {entry.name} --eval-only"
        )
    return resolve_config_file(entry.config), ["MODEL.WEIGHTS", entry.weights]


def fetch(path: str) -> str:
    """The local file of a weights path: ``zoo://NAME`` downloaded once into the cache, any
    other path as :func:`mask2former.utils.download.fetch` gives it (a local path unchanged).

    Raises:
        KeyError: an unknown zoo name (the message lists the known ones).
        DownloadError: the download failed or a check failed.
    """
    if path.startswith(ZOO_SCHEME):
        return str(download.download(get_entry(path).remote()))
    return download.fetch(path)


def format_table(entries: tuple[ZooEntry, ...] = ENTRIES) -> str:
    """The table printed by ``instaformer-zoo list``: name, backbone, metrics, config."""
    groups = (
        ("occlusion R / P / F1", OCCLUSION_METRICS, 2),
        ("WHDR distinct / overlap / all", DEPTH_METRICS, 2),
        ("COCO PQ / AP / mIoU", PANOPTIC_METRICS, 1),
    )
    rows = [("name", "backbone", *(g[0] for g in groups), "config")]
    for e in entries:
        cells = []
        for _, keys, digits in groups:
            values = [e.metrics.get(k) for k in keys]
            cells.append("-" if None in values else " / ".join(f"{v:.{digits}f}" for v in values))
        rows.append((e.name, e.backbone, *cells, e.config))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    """``instaformer-zoo list`` | ``download NAME [NAME ...]`` | ``path NAME [NAME ...]``."""
    parser = argparse.ArgumentParser(
        prog="instaformer-zoo", description="Released InstaFormer / InstaOrderNet / Mask2Former."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print the model table with the published metrics")
    get = commands.add_parser("download", help="download into the cache, print the local path")
    get.add_argument("names", nargs="+", metavar="NAME", help="zoo names (see list)")
    where = commands.add_parser(
        "path", help="print where the cached file goes (to put it there by hand) and its URL"
    )
    where.add_argument("names", nargs="+", metavar="NAME", help="zoo names (see list)")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(format_table())
        return 0
    try:
        entries = [get_entry(n) for n in args.names]
    except KeyError as err:
        parser.error(str(err.args[0]))
    if args.command == "path":
        for entry in entries:
            print(f"{download.cache_path(entry.url, entry.file_name)}  {entry.url}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for entry in entries:
        try:
            path = download.download(entry.remote())
        except download.DownloadError as err:
            print(f"instaformer-zoo: {err}", file=sys.stderr)
            return 1
        print(path)
    return 0


def cli() -> None:
    """``instaformer-zoo``: exit with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
