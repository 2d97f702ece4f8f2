#!/usr/bin/env python
"""Write the backbone of a gpt2_ft.py checkpoint as a published GPT-2 `pytorch_model.bin`.

    python demo/export_base.py BASE_DIR/model.800.pt BASE_DIR/pytorch_model.bin

gpt2_ft.py's final checkpoint is {"model_state_dict": {"transformer.<name>": tensor, ...}}; the
published layout is the same tensors under "<name>" (Conv1D weights stay (in, out)). The demo
needs the base in the published layout so that it enters the fine-tuning scripts exactly as
OpenAI's gpt2-medium-pytorch_model.bin does. Adapter tensors are refused: the base is a plain
model.
"""
import argparse
import os
import sys

import torch

ADAPTER_MARKERS = ("lora_", "nola_")  # loralib's adapter parameter names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="model.<step>.pt written by gpt2_ft.py --method full")
    ap.add_argument("output", help="pytorch_model.bin to write")
    args = ap.parse_args(argv)
    try:
        obj = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        sys.exit(f"export_base.py: cannot read {args.checkpoint}: {e}")
    sd = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd:
        sys.exit(f"export_base.py: {args.checkpoint}: expected a state dict (or one under 'model_state_dict')")
    out = {}
    for k, v in sd.items():
        if any(m in k for m in ADAPTER_MARKERS):
            sys.exit(f"export_base.py: {args.checkpoint}: holds adapter tensor {k!r}; export a fully trained base")
        for prefix in ("module.", "transformer."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v.contiguous()
    tmp = args.output + ".tmp"
    torch.save(out, tmp)
    os.replace(tmp, args.output)  # never leave a half-written file under the final name
    print(f"export_base: {len(out)} tensors -> {args.output}")


if __name__ == "__main__":
    main()
