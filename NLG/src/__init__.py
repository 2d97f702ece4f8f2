"""`nlg`: the GPT-2 NLG pipeline (E2E, WebNLG, DART) of Microsoft's LoRA repo, one package.

The scripts keep Microsoft's command lines (`python src/gpt2_ft.py ...` from NLG/); library code
imports `nlg.model`, `nlg.checkpoint`, ... Nothing heavy is imported here, so `--help` stays fast.
"""
