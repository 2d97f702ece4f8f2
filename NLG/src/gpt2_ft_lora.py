"""Fine-tune GPT-2 with LoRA (Hu et al.).

Same command line as gpt2_ft.py (Microsoft's flags plus loralib's); this entry point only presets
--method lora (give --lora_dim, --lora_alpha, --lora_dropout).
"""
import sys

from gpt2_ft import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "lora"},
         description="Fine-tune GPT-2 with LoRA (Hu et al.).")
