"""`nlu`: RoBERTa on GLUE with loralib's methods (`python src/run_glue.py ...` from NLU/)."""
