"""InstaOrderNet inference per image: all pairs batched vs one network input per forward pass.

One synthetic image (random RGB, ``--instances`` overlapping rectangle masks), a randomly
initialised InstaOrderNet of the chosen flavour with its released input size, BatchNorm in eval
mode. Every unordered pair runs in both orders (``n(n-1)`` network inputs), symmetrised as at
test time. "one at a time" is ``PAIRS_PER_FORWARD = 1``, the reference's procedure (one input
per forward pass, inputs built per pair); "batched" packs ``--batch`` inputs per forward pass.
Reported: median wall and process-CPU seconds per image over ``--repeats`` runs after one warm-up
run, and the ratios (on a shared machine the CPU-time ratio is the steadier figure).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from instaformer.instaordernet import network
from instaformer.instaordernet.meta_arch import InstaOrderNet
from mask2former.structures import masks_to_xywh
from mask2former.utils.argtypes import int_range

FLAVOURS = {
    "o": (network.instaordernet_o, "patch", 256),
    "d": (network.instaordernet_d, "resize", 384),
    "od": (network.instaordernet_od, "resize", 384),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=sorted(FLAVOURS), default="od", help="flavour")
    parser.add_argument(
        "--instances", type=int_range(1), default=10, help="instances N in the image"
    )
    parser.add_argument("--height", type=int_range(1), default=480, help="image height (pixels)")
    parser.add_argument("--width", type=int_range(1), default=640, help="image width (pixels)")
    parser.add_argument(
        "--input-size", type=int_range(0), default=0, help="network input side; 0 = spec"
    )
    parser.add_argument("--batch", type=int_range(0), default=0, help="inputs per forward; 0 = all")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads", type=int_range(1), default=2, help="torch intra-op threads (CPU)"
    )
    parser.add_argument(
        "--repeats", type=int_range(1), default=3, help="timed runs per mode (median)"
    )
    parser.add_argument("--channels-last", action="store_true", help="channels-last network")


def _scene(n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for k in range(n):
        x0 = int(torch.randint(0, w * 3 // 4, (1,), generator=gen))
        y0 = int(torch.randint(0, h * 3 // 4, (1,), generator=gen))
        masks[k, y0 : y0 + h // 4 + 10 * k % 40, x0 : x0 + w // 5 + 7 * k % 30] = True
    return image, masks


def _time(
    model: InstaOrderNet, image, masks, boxes, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) per image after one warm-up run."""
    walls, cpus = [], []
    for run in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        model.predict(image, masks, boxes)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if run > 0:  # the first run warms up kernels and allocators
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    build, mode, spec_size = FLAVOURS[args.task]
    size = args.input_size or spec_size
    net = build().eval()
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    n = args.instances
    num_inputs = n * (n - 1)
    model = InstaOrderNet(
        net=net, input_mode=mode, input_size=size, pairs_per_forward=args.batch or num_inputs
    )
    model.to(device).eval()
    image, masks = _scene(n, args.height, args.width)
    image, masks = image.to(device), masks.to(device)
    boxes = masks_to_xywh(masks)
    batched = _time(model, image, masks, boxes, args.repeats, device)
    batch = model.pairs_per_forward
    model.pairs_per_forward = 1
    single = _time(model, image, masks, boxes, args.repeats, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{args.threads}"
    print(
        f"InstaOrderNet^{args.task} ({mode} {size}), N={n} ({num_inputs} inputs), "
        f"{args.height}x{args.width} image, {name}"
    )
    print("                          wall s/image   CPU s/image (all threads)")
    print(f"  one input per forward : {single[0]:10.3f}   {single[1]:10.3f}")
    print(f"  {batch:3d} inputs per forward: {batched[0]:10.3f}   {batched[1]:10.3f}")
    print(
        f"  speed-up              : {single[0] / batched[0]:9.2f}x   {single[1] / batched[1]:9.2f}x"
    )
