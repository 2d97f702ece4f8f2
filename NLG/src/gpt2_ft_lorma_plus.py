"""Fine-tune GPT-2 with LoRMA_+ (multiplicative, T = I + s B A).

Same command line as gpt2_ft.py (Microsoft's flags plus loralib's); this entry point only presets
--method lorma --lorma_type rri (--lorma_mode pre|post, default pre).
"""
import sys

from gpt2_ft import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "lorma", "lorma_type": "rri"},
         description="Fine-tune GPT-2 with LoRMA_+ (multiplicative, T = I + s B A).")
