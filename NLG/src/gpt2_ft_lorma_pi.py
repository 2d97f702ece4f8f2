"""Fine-tune GPT-2 with LoRMA_pi (multiplicative, T = s pi(B A)).

Same command line as gpt2_ft.py (Microsoft's flags plus loralib's); this entry point only presets
--method lorma --lorma_type shift (--lorma_mode pre|post, default pre).
"""
import sys

from gpt2_ft import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "lorma", "lorma_type": "shift"},
         description="Fine-tune GPT-2 with LoRMA_pi (multiplicative, T = s pi(B A)).")
