"""Fine-tune GPT-2 with MTLoRA (Delta W = s B T A).

Same command line as gpt2_ft.py (Microsoft's flags plus loralib's); this entry point only presets
--method mtlora --mtlora_structure ICFM (the official default; or SHIM, CTCM, DTSM).
"""
import sys

from gpt2_ft import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "mtlora", "mtlora_structure": "ICFM"},
         description="Fine-tune GPT-2 with MTLoRA (Delta W = s B T A).")
